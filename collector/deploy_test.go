package collector

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/panorama-obs/panorama/internal/kubetest"
)

// TestDeployManifest keeps deploy/kubernetes/collector.yaml honest: its
// configuration loads, and its ClusterRole grants what the integration
// tests prove sufficient (kubetest.CollectorRules), no less.
func TestDeployManifest(t *testing.T) {
	raw, err := os.ReadFile("../deploy/kubernetes/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var sawConfig, sawRole bool
	for {
		var doc struct {
			Kind  string            `yaml:"kind"`
			Data  map[string]string `yaml:"data"`
			Rules []struct {
				APIGroups []string `yaml:"apiGroups"`
				Resources []string `yaml:"resources"`
				Verbs     []string `yaml:"verbs"`
			} `yaml:"rules"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			sawConfig = true
			content := strings.Replace(doc.Data["collector.yml"], "CHANGE-ME", "test", 1)
			cfg, err := Load([]byte(content), nil)
			if err != nil {
				t.Fatalf("the manifest's collector.yml does not load: %v", err)
			}
			if cfg.Auto == nil || !cfg.Auto.InCluster() {
				t.Error("the manifest's configuration should auto-configure in cluster")
			}
		case "ClusterRole":
			sawRole = true
			var got []rbacv1.PolicyRule
			for _, r := range doc.Rules {
				if len(r.Resources) == 0 {
					continue // nonResourceURLs
				}
				got = append(got, rbacv1.PolicyRule{APIGroups: r.APIGroups, Resources: r.Resources, Verbs: r.Verbs})
			}
			if want := kubetest.CollectorRules(); !reflect.DeepEqual(got, want) {
				t.Errorf("ClusterRole rules\n got %v\nwant %v", got, want)
			}
		}
	}
	if !sawConfig || !sawRole {
		t.Fatalf("manifest lacks its ConfigMap (%v) or ClusterRole (%v)", sawConfig, sawRole)
	}
}
