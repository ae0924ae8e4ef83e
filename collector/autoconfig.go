package collector

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"text/template"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"go.yaml.in/yaml/v2"
	"k8s.io/client-go/rest"
)

// InternalTarget is the address the generated jobs use for what the
// collector serves itself (topology info series, service probes). The
// scrape HTTP client dials it in-process, so it needs no port and its
// instance label never changes across restarts.
const InternalTarget = "panorama.internal:80"

// In-cluster credentials, as mounted into every pod.
const (
	inClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	inClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// Names of the generated jobs.
const (
	JobKubelet          = "kubernetes-nodes"
	JobCadvisor         = "kubernetes-cadvisor"
	JobNodeExporter     = "node-exporter"
	JobPods             = "kubernetes-pods"
	JobServiceEndpoints = "kubernetes-service-endpoints"
	JobProbes           = "panorama-probes"
	JobTopology         = "panorama-topology"
)

// AutoConfig is the kubernetes_auto block: how to reach the API server,
// and which of the standard jobs to generate.
type AutoConfig struct {
	// APIServer is the API server URL; with KubeConfig also empty the
	// collector uses its pod's in-cluster credentials.
	APIServer        config.URL              `yaml:"api_server,omitempty"`
	KubeConfig       string                  `yaml:"kubeconfig_file,omitempty"`
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
	// Namespaces limits pod, service and endpoint discovery; empty means all.
	Namespaces []string `yaml:"namespaces,omitempty"`
	// ScrapeInterval and ScrapeTimeout of the generated jobs; the global
	// values when unset.
	ScrapeInterval model.Duration `yaml:"scrape_interval,omitempty"`
	ScrapeTimeout  model.Duration `yaml:"scrape_timeout,omitempty"`

	Jobs         AutoJobs         `yaml:"jobs,omitempty"`
	Kubelet      KubeletConfig    `yaml:"kubelet,omitempty"`
	NodeExporter NodeExporterAuto `yaml:"node_exporter,omitempty"`
	Probes       ProbeAuto        `yaml:"probes,omitempty"`
}

// AutoJobs switches the generated jobs on and off (all on by default).
type AutoJobs struct {
	Kubelet          *bool `yaml:"kubelet,omitempty"`
	Cadvisor         *bool `yaml:"cadvisor,omitempty"`
	NodeExporter     *bool `yaml:"node_exporter,omitempty"`
	Pods             *bool `yaml:"pods,omitempty"`
	ServiceEndpoints *bool `yaml:"service_endpoints,omitempty"`
	Probes           *bool `yaml:"probes,omitempty"`
	Topology         *bool `yaml:"topology,omitempty"`
}

func on(b *bool) bool { return b == nil || *b }

// KubeletConfig says how to reach each node's kubelet (and its cAdvisor).
type KubeletConfig struct {
	// Scheme is https (the default) or http.
	Scheme string `yaml:"scheme,omitempty"`
	// HTTPClientConfig defaults to the pod's service-account token in
	// cluster, or to the API server credentials, with certificate
	// verification off (kubelet serving certificates are usually
	// self-signed).
	HTTPClientConfig *config.HTTPClientConfig `yaml:"http_config,omitempty"`
}

// NodeExporterAuto finds node-exporter pods.
type NodeExporterAuto struct {
	// Port is the container port node-exporter listens on (9100).
	Port int `yaml:"port,omitempty"`
	// Regex on the pod's app.kubernetes.io/name or app label.
	AppRegex string `yaml:"app_regex,omitempty"`
}

// ProbeAuto configures the health probe of every service endpoint.
type ProbeAuto struct {
	// Timeout of one probe: 5s, or the scrape interval when shorter.
	Timeout model.Duration `yaml:"timeout,omitempty"`
}

// defaultProbeTimeout is the probe timeout when none is set.
const defaultProbeTimeout = model.Duration(5 * time.Second)

// UnmarshalYAML fills defaults and validates.
func (c *AutoConfig) UnmarshalYAML(unmarshal func(interface{}) error) error {
	*c = AutoConfig{HTTPClientConfig: config.DefaultHTTPClientConfig}
	type plain AutoConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	if c.APIServer.URL != nil && c.KubeConfig != "" {
		return errors.New("set either api_server or kubeconfig_file, not both")
	}
	if c.APIServer.URL == nil && c.KubeConfig == "" && !isZeroHTTP(c.HTTPClientConfig) {
		return errors.New("authorization and TLS settings need api_server: in-cluster mode uses the pod's service account")
	}
	if err := c.HTTPClientConfig.Validate(); err != nil {
		return err
	}
	switch c.Kubelet.Scheme {
	case "":
		c.Kubelet.Scheme = "https"
	case "http", "https":
	default:
		return fmt.Errorf("kubelet.scheme must be http or https, not %q", c.Kubelet.Scheme)
	}
	if c.NodeExporter.Port == 0 {
		c.NodeExporter.Port = 9100
	}
	if c.NodeExporter.Port < 0 || c.NodeExporter.Port > 65535 {
		return fmt.Errorf("node_exporter.port %d is not a port", c.NodeExporter.Port)
	}
	if c.NodeExporter.AppRegex == "" {
		c.NodeExporter.AppRegex = "(prometheus-)?node-exporter"
	}
	if _, err := regexp.Compile(c.NodeExporter.AppRegex); err != nil {
		return fmt.Errorf("node_exporter.app_regex: %w", err)
	}
	for i, ns := range c.Namespaces {
		if ns == "" {
			return fmt.Errorf("namespaces[%d] is empty", i)
		}
	}
	return nil
}

func isZeroHTTP(h config.HTTPClientConfig) bool {
	return h.Authorization == nil && h.BasicAuth == nil && h.OAuth2 == nil && h.BearerToken == "" &&
		h.BearerTokenFile == "" && h.TLSConfig.CAFile == "" && h.TLSConfig.CA == "" &&
		h.TLSConfig.CertFile == "" && h.TLSConfig.KeyFile == "" && !h.TLSConfig.InsecureSkipVerify
}

// parseAutoConfig decodes the kubernetes_auto block; line is where it
// starts in the file, so the decoder's line numbers match the file's.
func parseAutoConfig(block []byte, line int) (*AutoConfig, error) {
	padded := append(bytes.Repeat([]byte("\n"), line-1), block...)
	var doc struct {
		Auto *AutoConfig `yaml:"kubernetes_auto"`
	}
	if err := yaml.UnmarshalStrict(padded, &doc); err != nil {
		return nil, fmt.Errorf("kubernetes_auto: %w", err)
	}
	if doc.Auto == nil {
		// An empty block means: in cluster, every job.
		var a AutoConfig
		if err := yaml.Unmarshal([]byte("{}"), &a); err != nil {
			return nil, err
		}
		doc.Auto = &a
	}
	return doc.Auto, nil
}

// InCluster reports whether the API server is reached with the pod's own
// service account.
func (c *AutoConfig) InCluster() bool { return c.APIServer.URL == nil && c.KubeConfig == "" }

// ScrapeConfigs generates the standard jobs. The relabelling is written in
// Prometheus' YAML and loaded by Prometheus' own loader, so the generated
// jobs obey exactly the rules of hand-written ones and show as such at
// /api/v1/status/config.
func (c *AutoConfig) ScrapeConfigs(global promconfig.GlobalConfig, existing []*promconfig.ScrapeConfig) ([]*promconfig.ScrapeConfig, error) {
	interval, timeout := global.ScrapeInterval, global.ScrapeTimeout
	if c.ScrapeInterval != 0 {
		interval = c.ScrapeInterval
		if c.ScrapeTimeout == 0 && timeout > interval {
			timeout = interval
		}
	}
	if c.ScrapeTimeout != 0 {
		timeout = c.ScrapeTimeout
	}
	probeTimeout := c.Probes.Timeout
	switch {
	case probeTimeout == 0:
		probeTimeout = min(defaultProbeTimeout, interval)
	case probeTimeout > interval:
		return nil, fmt.Errorf("probes.timeout %s is longer than the scrape interval %s", probeTimeout, interval)
	}
	var buf bytes.Buffer
	if err := jobsTemplate.Execute(&buf, struct {
		*AutoConfig
		ProbeTimeout model.Duration
	}{c, probeTimeout}); err != nil {
		return nil, err
	}
	doc := fmt.Sprintf("global:\n  scrape_interval: %s\n  scrape_timeout: %s\n", interval, timeout)
	if s := global.MetricNameValidationScheme; s.String() != "" {
		doc += fmt.Sprintf("  metric_name_validation_scheme: %s\n", s)
	}
	doc += buf.String()
	gen, err := promconfig.Load(doc, nil)
	if err != nil {
		return nil, fmt.Errorf("generated jobs: %w", err)
	}
	taken := map[string]bool{}
	for _, sc := range existing {
		taken[sc.JobName] = true
	}
	kubelet, err := c.kubeletHTTP()
	if err != nil {
		return nil, err
	}
	for _, sc := range gen.ScrapeConfigs {
		if taken[sc.JobName] {
			return nil, fmt.Errorf("scrape_configs already has a job named %q; rename it or switch the generated one off under kubernetes_auto.jobs", sc.JobName)
		}
		if sc.JobName == JobKubelet || sc.JobName == JobCadvisor {
			sc.HTTPClientConfig = kubelet
		}
		for _, sd := range sc.ServiceDiscoveryConfigs {
			k, ok := sd.(*kubernetes.SDConfig)
			if !ok {
				continue
			}
			k.APIServer = c.APIServer
			k.KubeConfig = c.KubeConfig
			k.HTTPClientConfig = c.HTTPClientConfig
			if k.Role != kubernetes.RoleNode {
				k.NamespaceDiscovery.Names = c.Namespaces
			}
		}
	}
	return gen.ScrapeConfigs, nil
}

// kubeletHTTP is how the kubelet jobs authenticate: as configured, or with
// the same identity discovery uses.
func (c *AutoConfig) kubeletHTTP() (config.HTTPClientConfig, error) {
	if c.Kubelet.HTTPClientConfig != nil {
		return *c.Kubelet.HTTPClientConfig, nil
	}
	h := config.DefaultHTTPClientConfig
	switch {
	case c.InCluster():
		h.Authorization = &config.Authorization{Type: "Bearer", CredentialsFile: inClusterTokenFile}
		h.TLSConfig.CAFile = inClusterCAFile
	case c.APIServer.URL != nil:
		h = c.HTTPClientConfig
	default:
		rc, err := c.RESTConfig()
		if err != nil {
			return h, err
		}
		h = httpConfigFromREST(rc)
	}
	h.TLSConfig.InsecureSkipVerify = true
	return h, nil
}

// httpConfigFromREST carries a kubeconfig's credentials over to Prometheus'
// HTTP client settings.
func httpConfigFromREST(rc *rest.Config) config.HTTPClientConfig {
	h := config.DefaultHTTPClientConfig
	switch {
	case rc.BearerTokenFile != "":
		h.Authorization = &config.Authorization{Type: "Bearer", CredentialsFile: rc.BearerTokenFile}
	case rc.BearerToken != "":
		h.Authorization = &config.Authorization{Type: "Bearer", Credentials: config.Secret(rc.BearerToken)}
	case rc.Username != "":
		h.BasicAuth = &config.BasicAuth{Username: rc.Username, Password: config.Secret(rc.Password)}
	}
	h.TLSConfig.CAFile, h.TLSConfig.CA = rc.CAFile, string(rc.CAData)
	h.TLSConfig.CertFile, h.TLSConfig.Cert = rc.CertFile, string(rc.CertData)
	h.TLSConfig.KeyFile, h.TLSConfig.Key = rc.KeyFile, config.Secret(rc.KeyData)
	return h
}

// The jobs follow the conventions of the Prometheus project's Kubernetes
// example and of the community Helm chart, so existing annotations work.
var jobsTemplate = template.Must(template.New("jobs").Funcs(template.FuncMap{"on": on}).Parse(`scrape_configs:
{{- if on .Jobs.Kubelet }}
- job_name: kubernetes-nodes
  scheme: {{ .Kubelet.Scheme }}
  kubernetes_sd_configs: [{role: node}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_node_name], target_label: node}
{{- end }}
{{- if on .Jobs.Cadvisor }}
- job_name: kubernetes-cadvisor
  scheme: {{ .Kubelet.Scheme }}
  metrics_path: /metrics/cadvisor
  kubernetes_sd_configs: [{role: node}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_node_name], target_label: node}
{{- end }}
{{- if on .Jobs.NodeExporter }}
- job_name: node-exporter
  kubernetes_sd_configs: [{role: pod}]
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_label_app]
    separator: ";"
    regex: '({{ .NodeExporter.AppRegex }});.*|;({{ .NodeExporter.AppRegex }})'
    action: keep
  - {source_labels: [__meta_kubernetes_pod_container_port_number], regex: '{{ .NodeExporter.Port }}', action: keep}
  - {source_labels: [__meta_kubernetes_pod_phase], regex: 'Pending|Succeeded|Failed|Completed', action: drop}
  - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
{{- end }}
{{- if on .Jobs.Pods }}
- job_name: kubernetes-pods
  kubernetes_sd_configs: [{role: pod}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: 'true', action: keep}
  - {source_labels: [__meta_kubernetes_pod_phase], regex: 'Pending|Succeeded|Failed|Completed', action: drop}
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme], regex: '(https?)', target_label: __scheme__}
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: '(.+)', target_label: __metrics_path__}
  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
    regex: '(.+?)(?::\d+)?;(\d+)'
    replacement: $1:$2
    target_label: __address__
  - {regex: '__meta_kubernetes_pod_annotation_prometheus_io_param_(.+)', replacement: __param_$1, action: labelmap}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
{{- end }}
{{- if on .Jobs.ServiceEndpoints }}
- job_name: kubernetes-service-endpoints
  kubernetes_sd_configs: [{role: endpointslice}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scrape], regex: 'true', action: keep}
  - {source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scheme], regex: '(https?)', target_label: __scheme__}
  - {source_labels: [__meta_kubernetes_service_annotation_prometheus_io_path], regex: '(.+)', target_label: __metrics_path__}
  - source_labels: [__address__, __meta_kubernetes_service_annotation_prometheus_io_port]
    regex: '(.+?)(?::\d+)?;(\d+)'
    replacement: $1:$2
    target_label: __address__
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_service_name], target_label: service}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_endpointslice_endpoint_node_name], target_label: node}
{{- end }}
{{- if on .Jobs.Probes }}
- job_name: panorama-probes
  metrics_path: /probe
  scrape_timeout: {{ .ProbeTimeout }}
  kubernetes_sd_configs: [{role: endpointslice}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_service_annotation_panorama_io_probe], regex: 'false', action: drop}
  - {source_labels: [__meta_kubernetes_endpointslice_port_protocol], regex: 'UDP|SCTP', action: drop}
  - {target_label: __param_module, replacement: tcp}
  - source_labels: [__meta_kubernetes_endpointslice_port_app_protocol, __meta_kubernetes_endpointslice_port_name]
    regex: '(?i)(http|http2|kubernetes.io/h2c);.*|;(http|http-.*)'
    target_label: __param_module
    replacement: http
  - source_labels: [__meta_kubernetes_endpointslice_port_app_protocol, __meta_kubernetes_endpointslice_port_name]
    regex: '(?i)https;.*|;(https|https-.*)'
    target_label: __param_module
    replacement: https
  - {source_labels: [__meta_kubernetes_service_annotation_panorama_io_probe], regex: '(tcp|https?)', target_label: __param_module}
  - {source_labels: [__meta_kubernetes_service_annotation_panorama_io_probe_path], regex: '(.+)', target_label: __param_path}
  - {source_labels: [__address__], target_label: __param_target}
  - {source_labels: [__address__], target_label: instance}
  - {target_label: __address__, replacement: "` + InternalTarget + `"}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_service_name], target_label: service}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_endpointslice_endpoint_node_name], target_label: node}
{{- end }}
{{- if on .Jobs.Topology }}
- job_name: panorama-topology
  honor_labels: true
  metrics_path: /topology/metrics
  static_configs: [{targets: ["` + InternalTarget + `"]}]
{{- end }}
`))
