package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/panorama-obs/panorama/topology"
)

func controller(apiVersion, kind, name string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, Controller: &yes}}
}

func node(name, ip string, ready corev1.ConditionStatus) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"topology.kubernetes.io/zone": "a"}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}},
			NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1.34.3"},
		},
	}
}

func testPod(ns, name, nodeName, ip string, labels map[string]string, owners []metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, OwnerReferences: owners},
		Spec:       corev1.PodSpec{NodeName: nodeName},
		Status:     corev1.PodStatus{PodIP: ip},
	}
}

func testObjects() []runtime.Object {
	return []runtime.Object{
		node("n1", "10.0.0.1", corev1.ConditionTrue),
		node("n2", "10.0.0.2", corev1.ConditionFalse),
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "cart-7d9f", OwnerReferences: controller("apps/v1", "Deployment", "cart"),
		}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "batch-5c4b"}},
		testPod("shop", "cart-7d9f-x2", "n1", "10.1.0.5", map[string]string{"app": "cart"}, controller("apps/v1", "ReplicaSet", "cart-7d9f")),
		testPod("shop", "cart-7d9f-y3", "n2", "10.1.0.6", map[string]string{"app": "cart"}, controller("apps/v1", "ReplicaSet", "cart-7d9f")),
		testPod("shop", "db-0", "n1", "10.1.0.7", map[string]string{"app": "db"}, controller("apps/v1", "StatefulSet", "db")),
		testPod("shop", "batch-5c4b-q", "", "", map[string]string{"app": "batch"}, controller("apps/v1", "ReplicaSet", "batch-5c4b")),
		testPod("kube-system", "etcd-n1", "n1", "10.0.0.1", nil, controller("v1", "Node", "n1")),
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "cart"}, ClusterIP: "10.96.0.10"},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "db"}, ClusterIP: "None", Type: corev1.ServiceTypeClusterIP},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "legacy"},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.11", Type: corev1.ServiceTypeNodePort},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "shop", Name: "legacy-abcde",
				Labels: map[string]string{discoveryv1.LabelServiceName: "legacy"},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.1.0.7"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "db-0"}},
				{Addresses: []string{"10.1.0.99"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "gone"}},
				{Addresses: []string{"192.168.1.1"}},
			},
		},
		// Agrees with the cart selector: the union must not double the edge.
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: "shop", Name: "cart-fghij",
				Labels: map[string]string{discoveryv1.LabelServiceName: "cart"},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.1.0.5"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "cart-7d9f-x2"}},
			},
		},
	}
}

// start runs topo until the test ends and waits for its caches, and for the
// watches of kinds to be open: the fake clientset drops events that happen
// before a watch starts.
func start(t *testing.T, client *fake.Clientset, topo *Topology, kinds ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- topo.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "caches synced", func() bool {
		if !topo.HasSynced() {
			return false
		}
		var watched []string
		for _, a := range client.Actions() {
			if a.GetVerb() == "watch" {
				watched = append(watched, a.GetResource().Resource)
			}
		}
		for _, k := range kinds {
			if !slices.Contains(watched, k) {
				return false
			}
		}
		return true
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// edges renders g's edges as "from -kind-> to" lines.
func edges(g *topology.Graph) []string {
	var out []string
	for _, e := range g.Edges {
		out = append(out, fmt.Sprintf("%s -%s-> %s", e.From, e.Kind, e.To))
	}
	return out
}

func nodeIDs(g *topology.Graph) []string {
	var out []string
	for _, n := range g.Nodes {
		out = append(out, n.ID)
	}
	return out
}

func TestTopology(t *testing.T) {
	client := fake.NewClientset(testObjects()...)
	topo := NewTopology(client, "east", nil, nil)
	start(t, client, topo, "pods")

	g := topo.Graph()
	if err := g.Validate(); err != nil {
		t.Fatalf("graph does not validate: %v", err)
	}
	wantNodes := []string{
		"cluster/east",
		"deployment/east/shop/cart",
		"node/east/n1",
		"node/east/n2",
		"pod/east/kube-system/etcd-n1",
		"pod/east/shop/batch-5c4b-q",
		"pod/east/shop/cart-7d9f-x2",
		"pod/east/shop/cart-7d9f-y3",
		"pod/east/shop/db-0",
		"replicaset/east/shop/batch-5c4b",
		"service/east/shop/cart",
		"service/east/shop/db",
		"service/east/shop/legacy",
		"statefulset/east/shop/db",
	}
	if got := nodeIDs(g); !slices.Equal(got, wantNodes) {
		t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNodes, "\n"))
	}
	wantEdges := []string{
		"node/east/n1 -member_of-> cluster/east",
		"node/east/n2 -member_of-> cluster/east",
		"pod/east/kube-system/etcd-n1 -runs_on-> node/east/n1",
		"pod/east/shop/batch-5c4b-q -owned_by-> replicaset/east/shop/batch-5c4b",
		"pod/east/shop/cart-7d9f-x2 -owned_by-> deployment/east/shop/cart",
		"pod/east/shop/cart-7d9f-x2 -runs_on-> node/east/n1",
		"pod/east/shop/cart-7d9f-y3 -owned_by-> deployment/east/shop/cart",
		"pod/east/shop/cart-7d9f-y3 -runs_on-> node/east/n2",
		"pod/east/shop/db-0 -runs_on-> node/east/n1",
		"pod/east/shop/db-0 -owned_by-> statefulset/east/shop/db",
		"service/east/shop/cart -selects-> pod/east/shop/cart-7d9f-x2",
		"service/east/shop/cart -selects-> pod/east/shop/cart-7d9f-y3",
		"service/east/shop/db -selects-> pod/east/shop/db-0",
		"service/east/shop/legacy -selects-> pod/east/shop/db-0",
	}
	if got := edges(g); !slices.Equal(got, wantEdges) {
		t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantEdges, "\n"))
	}

	labels := map[string]map[string]string{}
	for _, n := range g.Nodes {
		labels[n.ID] = n.Labels
	}
	for id, want := range map[string]map[string]string{
		"cluster/east":               {"cluster": "east"},
		"node/east/n1":               {"cluster": "east", "node": "n1"},
		"pod/east/shop/cart-7d9f-x2": {"cluster": "east", "namespace": "shop", "pod": "cart-7d9f-x2", "node": "n1"},
		"pod/east/shop/batch-5c4b-q": {"cluster": "east", "namespace": "shop", "pod": "batch-5c4b-q"},
		"service/east/shop/cart":     {"cluster": "east", "namespace": "shop", "service": "cart"},
		"deployment/east/shop/cart":  {"cluster": "east", "namespace": "shop", "deployment": "cart"},
	} {
		if got := labels[id]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("labels of %s = %v, want %v", id, got, want)
		}
	}

	const wantMetrics = `
# HELP panorama_node_info Kubernetes node, with its internal IP, kubelet version and readiness.
# TYPE panorama_node_info gauge
panorama_node_info{cluster="east",internal_ip="10.0.0.1",kubelet_version="v1.34.3",node="n1",ready="true"} 1
panorama_node_info{cluster="east",internal_ip="10.0.0.2",kubelet_version="v1.34.3",node="n2",ready="false"} 1
# HELP panorama_pod_info Kubernetes pod, with its node, IP and owning workload (deployment, statefulset, daemonset, job or replicaset).
# TYPE panorama_pod_info gauge
panorama_pod_info{namespace="kube-system",node="n1",pod="etcd-n1",pod_ip="10.0.0.1",workload="",workload_kind=""} 1
panorama_pod_info{namespace="shop",node="",pod="batch-5c4b-q",pod_ip="",workload="batch-5c4b",workload_kind="replicaset"} 1
panorama_pod_info{namespace="shop",node="n1",pod="cart-7d9f-x2",pod_ip="10.1.0.5",workload="cart",workload_kind="deployment"} 1
panorama_pod_info{namespace="shop",node="n1",pod="db-0",pod_ip="10.1.0.7",workload="db",workload_kind="statefulset"} 1
panorama_pod_info{namespace="shop",node="n2",pod="cart-7d9f-y3",pod_ip="10.1.0.6",workload="cart",workload_kind="deployment"} 1
# HELP panorama_service_info Kubernetes service, with its type and cluster IP.
# TYPE panorama_service_info gauge
panorama_service_info{cluster_ip="10.96.0.10",namespace="shop",service="cart",type="ClusterIP"} 1
panorama_service_info{cluster_ip="10.96.0.11",namespace="shop",service="legacy",type="NodePort"} 1
panorama_service_info{cluster_ip="None",namespace="shop",service="db",type="ClusterIP"} 1
# HELP panorama_service_pod Pod selected by a Kubernetes service, through its selector or its endpoint slices.
# TYPE panorama_service_pod gauge
panorama_service_pod{namespace="shop",pod="cart-7d9f-x2",service="cart"} 1
panorama_service_pod{namespace="shop",pod="cart-7d9f-y3",service="cart"} 1
panorama_service_pod{namespace="shop",pod="db-0",service="db"} 1
panorama_service_pod{namespace="shop",pod="db-0",service="legacy"} 1
`
	if err := testutil.CollectAndCompare(topo, strings.NewReader(wantMetrics)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(topo); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// A deleted pod leaves the graph, its edges and its series.
	if err := client.CoreV1().Pods("shop").Delete(context.Background(), "cart-7d9f-y3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted pod to leave the graph", func() bool {
		return !slices.Contains(nodeIDs(topo.Graph()), "pod/east/shop/cart-7d9f-y3")
	})
	for _, e := range edges(topo.Graph()) {
		if strings.Contains(e, "cart-7d9f-y3") {
			t.Errorf("edge of the deleted pod remains: %s", e)
		}
	}
	after := strings.NewReader(strings.NewReplacer(
		`panorama_pod_info{namespace="shop",node="n2",pod="cart-7d9f-y3",pod_ip="10.1.0.6",workload="cart",workload_kind="deployment"} 1`+"\n", "",
		`panorama_service_pod{namespace="shop",pod="cart-7d9f-y3",service="cart"} 1`+"\n", "",
	).Replace(wantMetrics))
	if err := testutil.CollectAndCompare(topo, after, "panorama_pod_info", "panorama_service_pod"); err != nil {
		t.Error(err)
	}
}

func TestTopologyNamespaces(t *testing.T) {
	client := fake.NewClientset(testObjects()...)
	topo := NewTopology(client, "east", []string{"shop", "shop"}, nil)
	start(t, client, topo)

	got := nodeIDs(topo.Graph())
	if slices.Contains(got, "pod/east/kube-system/etcd-n1") {
		t.Error("pod outside the watched namespaces in the graph")
	}
	for _, want := range []string{"node/east/n1", "pod/east/shop/db-0", "service/east/shop/legacy"} {
		if !slices.Contains(got, want) {
			t.Errorf("%s missing from %v", want, got)
		}
	}

	// Only nodes may be listed cluster-wide; everything else in "shop" only.
	for _, a := range client.Actions() {
		if a.GetVerb() != "list" {
			continue
		}
		if res := a.GetResource().Resource; res == "nodes" {
			if a.GetNamespace() != "" {
				t.Errorf("nodes listed in namespace %q", a.GetNamespace())
			}
		} else if a.GetNamespace() != "shop" {
			t.Errorf("%s listed in namespace %q, want shop", res, a.GetNamespace())
		}
	}
}

func TestGraphBeforeRun(t *testing.T) {
	topo := NewTopology(fake.NewClientset(), "east", nil, nil)
	if topo.HasSynced() {
		t.Error("HasSynced before Run")
	}
	g := topo.Graph()
	if got := nodeIDs(g); !slices.Equal(got, []string{"cluster/east"}) || len(g.Edges) != 0 {
		t.Errorf("graph before Run = %+v", g)
	}
}
