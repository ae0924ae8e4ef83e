// Package kube keeps the object graph of one Kubernetes cluster (nodes, pods,
// services, endpoint slices and the workloads owning the pods) from client-go
// shared informers, and serves it to the collector as a topology.Graph and as
// info series for PromQL.
package kube

import (
	"context"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appsv1listers "k8s.io/client-go/listers/apps/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	discoveryv1listers "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/panorama-obs/panorama/topology"
)

// Topology keeps a Kubernetes cluster's object graph in informer caches. Build
// it with NewTopology, start it with Run, then read it with Graph or scrape it
// as a prometheus.Collector. All methods are safe for concurrent use.
type Topology struct {
	cluster    string
	namespaces []string
	logger     *slog.Logger

	factories []informers.SharedInformerFactory
	synced    []cache.InformerSynced
	nodes     corev1listers.NodeLister
	scopes    []scope
}

// scope holds the listers of one watched namespace, or of all namespaces.
type scope struct {
	pods        corev1listers.PodLister
	services    corev1listers.ServiceLister
	slices      discoveryv1listers.EndpointSliceLister
	replicaSets appsv1listers.ReplicaSetLister
}

// NewTopology returns a Topology of the cluster named cluster, reached through
// client. Namespaced objects are watched in namespaces only, or in all
// namespaces when namespaces is empty or holds ""; nodes are cluster-scoped and
// always watched. Nothing is requested from the API server before Run.
func NewTopology(client kubernetes.Interface, cluster string, namespaces []string, logger *slog.Logger) *Topology {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if slices.Contains(namespaces, metav1.NamespaceAll) {
		namespaces = nil
	}
	namespaces = slices.Compact(slices.Sorted(slices.Values(namespaces)))

	t := &Topology{cluster: cluster, namespaces: namespaces, logger: logger}
	clusterWide := t.factory(client, metav1.NamespaceAll)
	nodes := clusterWide.Core().V1().Nodes()
	t.nodes = nodes.Lister()
	t.synced = append(t.synced, nodes.Informer().HasSynced)
	if len(namespaces) == 0 {
		t.scopes = append(t.scopes, t.scope(clusterWide))
	}
	for _, ns := range namespaces {
		t.scopes = append(t.scopes, t.scope(t.factory(client, ns)))
	}
	return t
}

func (t *Topology) factory(client kubernetes.Interface, namespace string) informers.SharedInformerFactory {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTransform(dropManagedFields),
	)
	t.factories = append(t.factories, f)
	return f
}

// scope registers the namespaced informers of f. Only ReplicaSets are watched
// among workloads: a pod's owner reference names its StatefulSet, DaemonSet
// or Job directly, and only a ReplicaSet needs a lookup to find its Deployment.
func (t *Topology) scope(f informers.SharedInformerFactory) scope {
	pods := f.Core().V1().Pods()
	services := f.Core().V1().Services()
	endpointSlices := f.Discovery().V1().EndpointSlices()
	replicaSets := f.Apps().V1().ReplicaSets()
	t.synced = append(t.synced,
		pods.Informer().HasSynced,
		services.Informer().HasSynced,
		endpointSlices.Informer().HasSynced,
		replicaSets.Informer().HasSynced,
	)
	return scope{
		pods:        pods.Lister(),
		services:    services.Lister(),
		slices:      endpointSlices.Lister(),
		replicaSets: replicaSets.Lister(),
	}
}

// dropManagedFields keeps server-side apply bookkeeping, which is often the
// bulk of an object and never read here, out of the caches.
func dropManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run starts the informers and blocks until ctx is done, then stops them. It
// returns nil: a cluster that cannot be listed (no route, no RBAC) leaves
// HasSynced false and is retried by the informers, which log through klog.
func (t *Topology) Run(ctx context.Context) error {
	for _, f := range t.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range t.factories {
			f.Shutdown()
		}
	}()
	t.logger.Info("Watching Kubernetes topology", "cluster", t.cluster, "namespaces", t.namespaces)
	if cache.WaitForCacheSync(ctx.Done(), t.synced...) {
		t.logger.Info("Kubernetes topology synced", "cluster", t.cluster)
	}
	<-ctx.Done()
	return nil
}

// HasSynced reports whether every informer has listed its objects once, so
// that Graph and the info series describe the whole cluster.
func (t *Topology) HasSynced() bool {
	for _, synced := range t.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// Graph returns the cluster's topology: the cluster, its nodes (member_of the
// cluster), pods (runs_on their node, owned_by their workload) and services
// (selecting pods by label selector or through EndpointSlices). Edges only join
// objects present in the caches, nodes and edges are sorted, and the graph is
// a fresh copy the caller may modify.
func (t *Topology) Graph() *topology.Graph {
	s := t.snapshot()
	c := t.cluster
	clusterID := topology.ClusterID(c)
	g := &topology.Graph{
		Nodes: []topology.Node{{ID: clusterID, Kind: topology.KindCluster, Labels: map[string]string{"cluster": c}}},
	}

	nodes := make(map[string]bool, len(s.nodes))
	for _, n := range s.nodes {
		id := topology.NodeID(c, n.Name)
		nodes[n.Name] = true
		g.Nodes = append(g.Nodes, topology.Node{
			ID: id, Kind: topology.KindNode, Cluster: c,
			Labels: map[string]string{"cluster": c, "node": n.Name},
		})
		g.Edges = append(g.Edges, topology.Edge{From: id, To: clusterID, Kind: topology.EdgeMemberOf})
	}

	for _, p := range s.pods {
		id := topology.PodID(c, p.Namespace, p.Name)
		lbls := map[string]string{"cluster": c, "namespace": p.Namespace, "pod": p.Name}
		if node := p.Spec.NodeName; node != "" {
			lbls["node"] = node
			if nodes[node] {
				g.Edges = append(g.Edges, topology.Edge{From: id, To: topology.NodeID(c, node), Kind: topology.EdgeRunsOn})
			}
		}
		g.Nodes = append(g.Nodes, topology.Node{ID: id, Kind: topology.KindPod, Cluster: c, Labels: lbls})

		if w := p.owner; w.kind != "" {
			// Merge below folds the copies a workload gets from each of its pods.
			wid := topology.ObjectID(w.kind, c, p.Namespace, w.name)
			g.Nodes = append(g.Nodes, topology.Node{
				ID: wid, Kind: w.kind, Cluster: c,
				Labels: map[string]string{"cluster": c, "namespace": p.Namespace, w.label(): w.name},
			})
			g.Edges = append(g.Edges, topology.Edge{From: id, To: wid, Kind: topology.EdgeOwnedBy})
		}
	}

	for _, svc := range s.services {
		id := topology.ServiceID(c, svc.Namespace, svc.Name)
		g.Nodes = append(g.Nodes, topology.Node{
			ID: id, Kind: topology.KindService, Cluster: c,
			Labels: map[string]string{"cluster": c, "namespace": svc.Namespace, "service": svc.Name},
		})
		for _, pod := range svc.pods {
			g.Edges = append(g.Edges, topology.Edge{From: id, To: topology.PodID(c, svc.Namespace, pod), Kind: topology.EdgeSelects})
		}
	}
	return topology.Merge(g)
}

// snapshot is a consistent-enough read of the caches, shared by Graph and
// Collect. Objects are the informers' own: never modify them.
type snapshot struct {
	nodes    []*corev1.Node
	pods     []pod
	services []service
}

type pod struct {
	*corev1.Pod
	owner workload
}

type service struct {
	*corev1.Service
	pods []string // names of the pods it selects, in its namespace, sorted
}

func (t *Topology) snapshot() snapshot {
	var s snapshot
	// Listing a cache only fails for a bad selector, and Everything is fine.
	s.nodes, _ = t.nodes.List(labels.Everything())
	for _, sc := range t.scopes {
		pods, _ := sc.pods.List(labels.Everything())
		services, _ := sc.services.List(labels.Everything())
		endpointSlices, _ := sc.slices.List(labels.Everything())

		byNamespace := map[string]map[string]*corev1.Pod{}
		for _, p := range pods {
			if byNamespace[p.Namespace] == nil {
				byNamespace[p.Namespace] = map[string]*corev1.Pod{}
			}
			byNamespace[p.Namespace][p.Name] = p
			s.pods = append(s.pods, pod{Pod: p, owner: sc.owner(p)})
		}

		// Endpoint slices name the pods behind services without a selector,
		// and the ready pods of the others.
		fromSlices := map[cache.ObjectName][]string{}
		for _, es := range endpointSlices {
			name := es.Labels[discoveryv1.LabelServiceName]
			if name == "" {
				continue
			}
			key := cache.NewObjectName(es.Namespace, name)
			for _, ep := range es.Endpoints {
				ref := ep.TargetRef
				if ref == nil || ref.Kind != "Pod" || (ref.Namespace != "" && ref.Namespace != es.Namespace) {
					continue
				}
				if _, ok := byNamespace[es.Namespace][ref.Name]; ok {
					fromSlices[key] = append(fromSlices[key], ref.Name)
				}
			}
		}

		for _, svc := range services {
			selected := fromSlices[cache.MetaObjectToName(svc)]
			if len(svc.Spec.Selector) > 0 && svc.Spec.Type != corev1.ServiceTypeExternalName {
				sel := labels.SelectorFromValidatedSet(svc.Spec.Selector)
				for name, p := range byNamespace[svc.Namespace] {
					if sel.Matches(labels.Set(p.Labels)) {
						selected = append(selected, name)
					}
				}
			}
			slices.Sort(selected)
			s.services = append(s.services, service{Service: svc, pods: slices.Compact(selected)})
		}
	}
	return s
}

// workload is the controller of a pod, resolved to the object a user deploys.
type workload struct {
	kind topology.NodeKind
	name string
}

// label returns the name of the label carrying the workload's name, as
// kube-state-metrics spells it: job_name for jobs, as job is Prometheus' own.
func (w workload) label() string {
	if w.kind == topology.KindJob {
		return "job_name"
	}
	return string(w.kind)
}

var workloadKinds = map[schema.GroupKind]topology.NodeKind{
	{Group: "apps", Kind: "Deployment"}:  topology.KindDeployment,
	{Group: "apps", Kind: "ReplicaSet"}:  topology.KindReplicaSet,
	{Group: "apps", Kind: "StatefulSet"}: topology.KindStatefulSet,
	{Group: "apps", Kind: "DaemonSet"}:   topology.KindDaemonSet,
	{Group: "batch", Kind: "Job"}:        topology.KindJob,
}

func kindOf(ref *metav1.OwnerReference) topology.NodeKind {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return ""
	}
	return workloadKinds[gv.WithKind(ref.Kind).GroupKind()]
}

// owner resolves the workload controlling p: its StatefulSet, DaemonSet or
// Job, or for a ReplicaSet the Deployment controlling that ReplicaSet when
// there is one. Other controllers (a Node for static pods, custom resources)
// give the zero workload.
func (sc scope) owner(p *corev1.Pod) workload {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return workload{}
	}
	w := workload{kind: kindOf(ref), name: ref.Name}
	switch w.kind {
	case "":
		return workload{}
	case topology.KindReplicaSet:
		rs, err := sc.replicaSets.ReplicaSets(p.Namespace).Get(ref.Name)
		if err != nil {
			break // not cached (yet): the ReplicaSet is the best we know
		}
		if up := metav1.GetControllerOf(rs); up != nil && kindOf(up) == topology.KindDeployment {
			return workload{kind: topology.KindDeployment, name: up.Name}
		}
	}
	return w
}
