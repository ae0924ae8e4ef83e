package collector

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/prometheus/common/config"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/panorama-obs/panorama/topology"
)

// RESTConfig builds the Kubernetes client configuration the same three ways
// Prometheus' Kubernetes discovery does: a kubeconfig file, an API server
// URL with Prometheus HTTP client settings, or the pod's in-cluster account.
func (c *AutoConfig) RESTConfig() (*rest.Config, error) {
	switch {
	case c.KubeConfig != "":
		rc, err := clientcmd.BuildConfigFromFlags("", c.KubeConfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig_file %s: %w", c.KubeConfig, err)
		}
		return rc, nil
	case c.APIServer.URL == nil:
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no api_server nor kubeconfig_file given, and not running in a cluster: %w", err)
		}
		return rc, nil
	default:
		rt, err := config.NewRoundTripperFromConfig(c.HTTPClientConfig, "panorama_topology")
		if err != nil {
			return nil, err
		}
		return &rest.Config{Host: c.APIServer.String(), Transport: rt}, nil
	}
}

// Topology is the cluster's object graph as the topology block of the
// shared formats; without kubernetes_auto it holds only the cluster.
func (c *Collector) Topology() *topology.Graph {
	if c.topology == nil {
		return &topology.Graph{Nodes: []topology.Node{{ID: topology.ClusterID(c.Cluster()), Kind: topology.KindCluster}}}
	}
	return c.topology.Graph()
}

// serveTopology answers GET /api/v1/topology with the topology block itself:
// {"nodes":[…],"edges":[…]}, ready to paste under "topology" in a case file.
func (c *Collector) serveTopology(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if c.topology != nil && !c.topology.HasSynced() {
		http.Error(w, "the Kubernetes topology has not synced yet; check the collector's RBAC and its log", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c.Topology())
}
