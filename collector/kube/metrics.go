package kube

import (
	"cmp"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

// The info series join metrics to the topology in PromQL. They carry no
// cluster label except panorama_node_info: the collector serves them with its
// external labels, cluster included, and scrapes them with honor_labels. Label
// sets are fixed and bounded: no Kubernetes labels or annotations are copied.
var (
	nodeInfoDesc = prometheus.NewDesc(
		"panorama_node_info",
		"Kubernetes node, with its internal IP, kubelet version and readiness.",
		[]string{"node", "cluster", "internal_ip", "kubelet_version", "ready"}, nil,
	)
	podInfoDesc = prometheus.NewDesc(
		"panorama_pod_info",
		"Kubernetes pod, with its node, IP and owning workload (deployment, statefulset, daemonset, job or replicaset).",
		[]string{"namespace", "pod", "node", "pod_ip", "workload_kind", "workload"}, nil,
	)
	serviceInfoDesc = prometheus.NewDesc(
		"panorama_service_info",
		"Kubernetes service, with its type and cluster IP.",
		[]string{"namespace", "service", "type", "cluster_ip"}, nil,
	)
	servicePodDesc = prometheus.NewDesc(
		"panorama_service_pod",
		"Pod selected by a Kubernetes service, through its selector or its endpoint slices.",
		[]string{"namespace", "service", "pod"}, nil,
	)
)

// Describe implements prometheus.Collector.
func (t *Topology) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodeInfoDesc
	ch <- podInfoDesc
	ch <- serviceInfoDesc
	ch <- servicePodDesc
}

// Collect implements prometheus.Collector: one gauge of value 1 per node, pod,
// service and service-pod pair in the caches.
func (t *Topology) Collect(ch chan<- prometheus.Metric) {
	s := t.snapshot()
	for _, n := range s.nodes {
		ch <- prometheus.MustNewConstMetric(nodeInfoDesc, prometheus.GaugeValue, 1,
			n.Name, t.cluster, internalIP(n), n.Status.NodeInfo.KubeletVersion, ready(n))
	}
	for _, p := range s.pods {
		ch <- prometheus.MustNewConstMetric(podInfoDesc, prometheus.GaugeValue, 1,
			p.Namespace, p.Name, p.Spec.NodeName, p.Status.PodIP, string(p.owner.kind), p.owner.name)
	}
	for _, svc := range s.services {
		// The API server defaults an empty type to ClusterIP.
		typ := cmp.Or(string(svc.Spec.Type), string(corev1.ServiceTypeClusterIP))
		ch <- prometheus.MustNewConstMetric(serviceInfoDesc, prometheus.GaugeValue, 1,
			svc.Namespace, svc.Name, typ, svc.Spec.ClusterIP)
		for _, pod := range svc.pods {
			ch <- prometheus.MustNewConstMetric(servicePodDesc, prometheus.GaugeValue, 1,
				svc.Namespace, svc.Name, pod)
		}
	}
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

func ready(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return "true"
			}
			break
		}
	}
	return "false"
}
