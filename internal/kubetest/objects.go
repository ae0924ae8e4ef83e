package kubetest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// The helpers below stand in for the controllers, scheduler and kubelets
// that a kubetest cluster does not run. Note that without the namespace
// controller a deleted namespace stays Terminating forever.

// CollectorRules is the least-privilege RBAC documented for the collector's
// Kubernetes discovery: get/list/watch on what it discovers.
func CollectorRules() []rbacv1.PolicyRule {
	read := []string{"get", "list", "watch"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "nodes/metrics", "nodes/proxy", "pods", "services", "endpoints", "namespaces"}, Verbs: read},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "deployments", "statefulsets", "daemonsets"}, Verbs: read},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: read},
	}
}

// CreateNamespace creates namespace name (returning it if it exists) and its
// "default" ServiceAccount.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		ns, err = c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, err
	}
	return ns, c.EnsureDefaultServiceAccount(ctx, name)
}

// EnsureDefaultServiceAccount creates the "default" ServiceAccount of ns, as
// the serviceaccount controller would.
func (c *Cluster) EnsureDefaultServiceAccount(ctx context.Context, ns string) error {
	return c.ensureServiceAccount(ctx, ns, "default")
}

func (c *Cluster) ensureServiceAccount(ctx context.Context, ns, name string) error {
	_, err := c.client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// CreateToken is ServiceAccountToken for tests: it fails t on error.
func (c *Cluster) CreateToken(t testing.TB, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	tok, err := c.ServiceAccountToken(t.Context(), name, rules)
	if err != nil {
		t.Fatalf("kubetest: token for %s: %v", name, err)
	}
	return tok
}

// ServiceAccountToken creates (or updates) ServiceAccount default/name, a
// ClusterRole name with rules bound to it, and returns a one-hour token minted
// with the TokenRequest API. Once it returns, the RBAC authorizer allows the
// first rule (the authorizer's caches lag behind the writes).
func (c *Cluster) ServiceAccountToken(ctx context.Context, name string, rules []rbacv1.PolicyRule) (string, error) {
	const ns = "default"
	if _, err := c.CreateNamespace(ctx, ns); err != nil {
		return "", err
	}
	if err := c.ensureServiceAccount(ctx, ns, name); err != nil {
		return "", err
	}
	rbac := c.client.RbacV1()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := rbac.ClusterRoles().Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				cur.Rules = rules
				_, err = rbac.ClusterRoles().Update(ctx, cur, metav1.UpdateOptions{})
			}
			return err
		})
		if err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	tr, err := c.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	if len(rules) > 0 && len(rules[0].Resources) > 0 && len(rules[0].Verbs) > 0 {
		res, sub, _ := strings.Cut(rules[0].Resources[0], "/")
		attrs := &authzv1.ResourceAttributes{Verb: rules[0].Verbs[0], Resource: res, Subresource: sub}
		if len(rules[0].APIGroups) > 0 {
			attrs.Group = rules[0].APIGroups[0]
		}
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + ns + ":" + name,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: attrs,
		}}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			r, err := c.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			return err == nil && r.Status.Allowed, err
		})
		if err != nil {
			return "", fmt.Errorf("waiting for RBAC to allow %+v: %w", *attrs, err)
		}
	}
	return tr.Status.Token, nil
}

// SetNodeReady creates node name if needed and reports it Ready like a
// kubelet would: InternalIP and Hostname addresses, Ready condition, kubelet
// port. It also drops the not-ready taint added at creation (the node
// lifecycle controller's job).
func (c *Cluster) SetNodeReady(ctx context.Context, name, internalIP string, kubeletPort int32) (*corev1.Node, error) {
	nodes := c.client.CoreV1().Nodes()
	_, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
	}}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	var node *corev1.Node
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		cur.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}, {Type: corev1.NodeHostName, Address: name}}
		cur.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}}
		cur.Status.DaemonEndpoints.KubeletEndpoint.Port = kubeletPort
		if node, err = nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return err
		}
		notReady := func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady }
		if slices.ContainsFunc(node.Spec.Taints, notReady) {
			node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, notReady)
			node, err = nodes.Update(ctx, node, metav1.UpdateOptions{})
		}
		return err
	})
	return node, err
}

// SetPodRunning binds pod to nodeName if it is not bound yet (the
// scheduler's job) and reports it Running and Ready with podIP, like a
// kubelet would. hostIP is the node's InternalIP if the node exists.
func (c *Cluster) SetPodRunning(ctx context.Context, pod *corev1.Pod, podIP, nodeName string) (*corev1.Pod, error) {
	pods := c.client.CoreV1().Pods(pod.Namespace)
	cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if nodeName != "" && cur.Spec.NodeName == "" {
		err := pods.Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
			Target:     corev1.ObjectReference{Kind: "Node", Name: nodeName},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("bind %s/%s to %s: %w", pod.Namespace, pod.Name, nodeName, err)
		}
	} else if nodeName != "" && cur.Spec.NodeName != nodeName {
		return nil, fmt.Errorf("pod %s/%s is bound to %s, not %s", pod.Namespace, pod.Name, cur.Spec.NodeName, nodeName)
	}
	var hostIP string
	if nodeName != "" {
		if n, err := c.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{}); err == nil {
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					hostIP = a.Address
					break
				}
			}
		}
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		st := &cur.Status
		st.Phase = corev1.PodRunning
		if podIP != "" {
			st.PodIP, st.PodIPs = podIP, []corev1.PodIP{{IP: podIP}}
		}
		if hostIP != "" {
			st.HostIP, st.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
		}
		if st.StartTime == nil {
			st.StartTime = &now
		}
		st.Conditions = nil
		for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
			st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
		}
		st.ContainerStatuses = nil
		for _, ctr := range cur.Spec.Containers {
			st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
				Name: ctr.Name, Image: ctr.Image, Ready: true, Started: new(true),
				ContainerID: "containerd://kubetest-" + ctr.Name,
				State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
		pod, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	return pod, err
}

// DeletePodNow deletes a pod with grace period 0: it is gone at once, as
// after a kubelet confirmed the kill.
func (c *Cluster) DeletePodNow(ctx context.Context, ns, name string) error {
	return c.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
}

// Endpoint is one backend of a service for WriteEndpoints.
type Endpoint struct {
	PodName  string // target pod, in the service's namespace
	IP       string // must not be loopback or link-local (API validation)
	NodeName string
	Ports    []corev1.EndpointPort // Protocol defaults to TCP
	NotReady bool
}

// WriteEndpoints creates or replaces, for svc, both the v1 Endpoints object
// and the discovery/v1 EndpointSlices (label kubernetes.io/service-name),
// as the endpoints and endpointslice controllers would. Endpoints with the
// same ports (and IP family) share a subset and a slice.
func (c *Cluster) WriteEndpoints(ctx context.Context, svc *corev1.Service, eps ...Endpoint) error {
	type group struct {
		ports []corev1.EndpointPort
		ipv6  bool
		eps   []Endpoint
	}
	var groups []*group
	index := map[string]*group{}
	for _, ep := range eps {
		ip := net.ParseIP(ep.IP)
		if ip == nil {
			return fmt.Errorf("endpoint %q: bad IP %q", ep.PodName, ep.IP)
		}
		ports := slices.Clone(ep.Ports)
		for i := range ports {
			if ports[i].Protocol == "" {
				ports[i].Protocol = corev1.ProtocolTCP
			}
		}
		ipv6 := ip.To4() == nil
		key := fmt.Sprint(ipv6, ports)
		if index[key] == nil {
			index[key] = &group{ports: ports, ipv6: ipv6}
			groups = append(groups, index[key])
		}
		index[key].eps = append(index[key].eps, ep)
	}

	ref := func(ep Endpoint) *corev1.ObjectReference {
		return &corev1.ObjectReference{Kind: "Pod", Namespace: svc.Namespace, Name: ep.PodName}
	}
	node := func(ep Endpoint) *string {
		if ep.NodeName == "" {
			return nil
		}
		return new(ep.NodeName)
	}

	// v1 Endpoints.
	want := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: svc.Labels}}
	for _, g := range groups {
		s := corev1.EndpointSubset{Ports: g.ports}
		for _, ep := range g.eps {
			a := corev1.EndpointAddress{IP: ep.IP, NodeName: node(ep), TargetRef: ref(ep)}
			if ep.NotReady {
				s.NotReadyAddresses = append(s.NotReadyAddresses, a)
			} else {
				s.Addresses = append(s.Addresses, a)
			}
		}
		want.Subsets = append(want.Subsets, s)
	}
	epClient := c.client.CoreV1().Endpoints(svc.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := epClient.Get(ctx, svc.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = epClient.Create(ctx, want, metav1.CreateOptions{})
			return err
		} else if err != nil {
			return err
		}
		cur.Labels, cur.Subsets = want.Labels, want.Subsets
		_, err = epClient.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("endpoints %s/%s: %w", svc.Namespace, svc.Name, err)
	}

	// discovery/v1 EndpointSlices, named <service>-kt<i>.
	const managedBy = "endpointslice-controller.k8s.io"
	esClient := c.client.DiscoveryV1().EndpointSlices(svc.Namespace)
	labels := map[string]string{}
	for k, v := range svc.Labels {
		labels[k] = v
	}
	labels[discoveryv1.LabelServiceName] = svc.Name
	labels[discoveryv1.LabelManagedBy] = managedBy
	var owners []metav1.OwnerReference
	if svc.UID != "" {
		owners = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: new(true), BlockOwnerDeletion: new(true)}}
	}
	keep := map[string]bool{}
	for i, g := range groups {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: fmt.Sprintf("%s-kt%d", svc.Name, i), Namespace: svc.Namespace, Labels: labels, OwnerReferences: owners},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		if g.ipv6 {
			es.AddressType = discoveryv1.AddressTypeIPv6
		}
		for _, p := range g.ports {
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: new(p.Name), Port: new(p.Port), Protocol: new(p.Protocol), AppProtocol: p.AppProtocol})
		}
		for _, ep := range g.eps {
			ready := !ep.NotReady
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{ep.IP},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: new(false)},
				NodeName:   node(ep),
				TargetRef:  ref(ep),
			})
		}
		keep[es.Name] = true
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := esClient.Get(ctx, es.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				_, err = esClient.Create(ctx, es, metav1.CreateOptions{})
				return err
			} else if err != nil {
				return err
			}
			if cur.AddressType != es.AddressType { // immutable
				if err := esClient.Delete(ctx, es.Name, metav1.DeleteOptions{}); err != nil {
					return err
				}
				_, err = esClient.Create(ctx, es, metav1.CreateOptions{})
				return err
			}
			es.ResourceVersion = cur.ResourceVersion
			_, err = esClient.Update(ctx, es, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("endpointslice %s/%s: %w", svc.Namespace, es.Name, err)
		}
	}
	old, err := esClient.List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name + "," + discoveryv1.LabelManagedBy + "=" + managedBy})
	if err != nil {
		return err
	}
	for _, es := range old.Items {
		if !keep[es.Name] {
			if err := esClient.Delete(ctx, es.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
	}
	return nil
}
