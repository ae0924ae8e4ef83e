package collector

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/discovery/kubernetes"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "collector.yml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		want    []string
	}{
		{
			name:    "missing cluster label",
			content: "global:\n  scrape_interval: 5s\nscrape_configs: []\n",
			want:    []string{"collector.yml", "line 1", `"cluster"`},
		},
		{
			name:    "type error keeps its line",
			content: "global:\n  external_labels: {cluster: a}\nscrape_configs:\n  - job_name: x\n    scrape_interval: often\n",
			want:    []string{"collector.yml", "line 5", "often"},
		},
		{
			name:    "line numbers survive a kubernetes_auto block above the error",
			content: "kubernetes_auto:\n  api_server: https://k8s.example:6443\n  namespaces: [shop]\nglobal:\n  external_labels: {cluster: a}\n  bogus_field: 1\n",
			want:    []string{"line 6", "bogus_field"},
		},
		{
			name:    "unknown field in kubernetes_auto names its line",
			content: "global:\n  external_labels: {cluster: a}\nkubernetes_auto:\n  api_server: https://k8s.example:6443\n  namespacez: [shop]\n",
			want:    []string{"kubernetes_auto", "line 5", "namespacez"},
		},
		{
			name:    "api_server and kubeconfig together",
			content: "global:\n  external_labels: {cluster: a}\nkubernetes_auto:\n  api_server: https://k8s.example:6443\n  kubeconfig_file: /tmp/kc\n",
			want:    []string{"either api_server or kubeconfig_file"},
		},
		{
			name:    "bad kubelet scheme",
			content: "global:\n  external_labels: {cluster: a}\nkubernetes_auto:\n  api_server: https://k8s.example:6443\n  kubelet: {scheme: ftp}\n",
			want:    []string{"kubelet.scheme", "ftp"},
		},
		{
			name:    "generated job clashes with a hand-written one",
			content: "global:\n  external_labels: {cluster: a}\nscrape_configs:\n  - job_name: kubernetes-pods\n    static_configs: [{targets: ['a:1']}]\nkubernetes_auto:\n  api_server: https://k8s.example:6443\n",
			want:    []string{`"kubernetes-pods"`, "kubernetes_auto.jobs"},
		},
		{
			name:    "duplicate job names the second",
			content: "global:\n  external_labels: {cluster: a}\nscrape_configs:\n  - job_name: node\n    static_configs: [{targets: ['a:1']}]\n  - job_name: node\n    static_configs: [{targets: ['b:1']}]\n",
			want:    []string{"line 6", `"node"`},
		},
		{
			name:    "bad relabel regex",
			content: "global:\n  external_labels: {cluster: a}\nscrape_configs:\n  - job_name: node\n    relabel_configs:\n      - {source_labels: [x], regex: '(', action: keep}\n",
			want:    []string{"line 6"},
		},
		{
			name:    "not YAML",
			content: "global: [\n",
			want:    []string{"collector.yml", "line"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadFile(writeConfig(t, tc.content), nil)
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadAutoConfigGeneratesJobs(t *testing.T) {
	content := `global:
  scrape_interval: 20s
  external_labels: {cluster: east, region: eu}
scrape_configs:
  - job_name: mine
    static_configs: [{targets: ['localhost:9100']}]
# The Kubernetes jobs are generated from here.
kubernetes_auto:
  api_server: https://k8s.example:6443
  authorization: {credentials: s3cr3t}
  namespaces: [shop, payments]
  scrape_interval: 10s
  jobs: {cadvisor: false}
`
	cfg, err := LoadFile(writeConfig(t, content), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "east" {
		t.Fatalf("cluster = %q", cfg.Cluster)
	}
	jobs := map[string]bool{}
	for _, sc := range cfg.Prometheus.ScrapeConfigs {
		jobs[sc.JobName] = true
		if sc.JobName == "mine" {
			if sc.ScrapeInterval.String() != "20s" {
				t.Errorf("hand-written job interval = %s, want the global 20s", sc.ScrapeInterval)
			}
			continue
		}
		if sc.ScrapeInterval.String() != "10s" {
			t.Errorf("job %s interval = %s, want 10s", sc.JobName, sc.ScrapeInterval)
		}
		for _, sd := range sc.ServiceDiscoveryConfigs {
			k, ok := sd.(*kubernetes.SDConfig)
			if !ok {
				continue
			}
			if k.APIServer.String() != "https://k8s.example:6443" {
				t.Errorf("job %s api_server = %s", sc.JobName, k.APIServer.String())
			}
			if k.HTTPClientConfig.Authorization == nil || string(k.HTTPClientConfig.Authorization.Credentials) != "s3cr3t" {
				t.Errorf("job %s lost the API server credentials", sc.JobName)
			}
			if k.Role == kubernetes.RoleNode {
				if len(k.NamespaceDiscovery.Names) != 0 {
					t.Errorf("job %s: nodes are not namespaced", sc.JobName)
				}
			} else if strings.Join(k.NamespaceDiscovery.Names, ",") != "shop,payments" {
				t.Errorf("job %s namespaces = %v", sc.JobName, k.NamespaceDiscovery.Names)
			}
		}
	}
	for _, want := range []string{"mine", JobKubelet, JobNodeExporter, JobPods, JobServiceEndpoints, JobProbes, JobTopology} {
		if !jobs[want] {
			t.Errorf("job %s missing; have %v", want, jobs)
		}
	}
	if jobs[JobCadvisor] {
		t.Errorf("cadvisor was switched off but generated")
	}
	// The generated jobs show in the configuration the API serves.
	if s := cfg.Prometheus.String(); !strings.Contains(s, "job_name: kubernetes-pods") || strings.Contains(s, "s3cr3t") {
		t.Errorf("rendered configuration lacks the generated jobs or leaks the secret:\n%s", s)
	}
}

func TestLoadAutoConfigInCluster(t *testing.T) {
	cfg, err := LoadFile(writeConfig(t, "global:\n  external_labels: {cluster: a}\nkubernetes_auto: {}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Auto.InCluster() {
		t.Fatal("an empty block means in-cluster")
	}
	for _, sc := range cfg.Prometheus.ScrapeConfigs {
		if sc.JobName != JobKubelet {
			continue
		}
		a := sc.HTTPClientConfig.Authorization
		if a == nil || a.CredentialsFile != inClusterTokenFile || !sc.HTTPClientConfig.TLSConfig.InsecureSkipVerify {
			t.Errorf("kubelet job does not use the service account token: %+v", sc.HTTPClientConfig)
		}
		if sc.Scheme != "https" {
			t.Errorf("kubelet scheme = %s", sc.Scheme)
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("global:\n  external_labels: {cluster: a}\n"))
	f.Add([]byte("global:\n  external_labels: {cluster: a}\nkubernetes_auto:\n  api_server: https://x:6443\n  namespaces: [a]\n"))
	f.Add([]byte("kubernetes_auto:\n  kubeconfig_file: /x\n  jobs: {pods: false}\nglobal: {external_labels: {cluster: b}}\n"))
	f.Add([]byte("kubernetes_auto: []\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		cfg, err := Load(content, nil)
		if err == nil && cfg.Cluster == "" {
			t.Fatal("accepted a configuration without a cluster label")
		}
	})
}
