package kubetest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestFindBinariesMissing(t *testing.T) {
	t.Setenv("PANORAMA_KUBE_APISERVER", filepath.Join(t.TempDir(), "nope"))
	if _, _, err := findBinaries(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
}

// A kube-apiserver that cannot bind is restarted on another port; one that
// fails otherwise yields an error carrying its log, and etcd is stopped.
func TestStartFailureReportsLogs(t *testing.T) {
	if _, err := exec.LookPath("etcd"); err != nil && os.Getenv("PANORAMA_ETCD") == "" {
		t.Skip("no etcd")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-apiserver")
	script := "#!/bin/sh\necho x >> " + dir + "/runs\n" +
		"[ $(wc -l < " + dir + "/runs) -eq 1 ] && { echo 'listen tcp: bind: address already in use'; exit 1; }\n" +
		"echo 'boom: something else'; exit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PANORAMA_KUBE_APISERVER", fake)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := StartCluster(ctx, filepath.Join(dir, "cluster"), nil)
	if c != nil || err == nil || !strings.Contains(err.Error(), "boom: something else") || !strings.Contains(err.Error(), "etcd.log") {
		t.Fatalf("StartCluster = %v, %v; want an error with both logs", c, err)
	}
	if runs, _ := os.ReadFile(filepath.Join(dir, "runs")); strings.Count(string(runs), "x") != 2 {
		t.Fatalf("fake apiserver ran %d times, want 2 (one retry after the port conflict)", strings.Count(string(runs), "x"))
	}
}

func TestClusterStarts(t *testing.T) {
	c := Start(t)
	body := time.Now()
	ctx := t.Context()
	admin := c.Client()

	if _, err := c.CreateNamespace(ctx, "obs"); err != nil {
		t.Fatal(err)
	}
	node, err := c.SetNodeReady(ctx, "node-a", "10.1.0.1", 10250)
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Status.DaemonEndpoints.KubeletEndpoint.Port; got != 10250 || len(node.Spec.Taints) != 0 {
		t.Fatalf("node: kubelet port %d, taints %v", got, node.Spec.Taints)
	}

	pod, err := admin.CoreV1().Pods("obs").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app-0", Namespace: "obs", Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "example.com/app:1", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 8080}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod, err = c.SetPodRunning(ctx, pod, "10.2.0.5", "node-a"); err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != "10.2.0.5" || pod.Status.HostIP != "10.1.0.1" || pod.Spec.NodeName != "node-a" {
		t.Fatalf("pod status: %+v, node %q", pod.Status, pod.Spec.NodeName)
	}

	svc, err := admin.CoreV1().Services("obs").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "obs"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "app"}, Ports: []corev1.ServicePort{{Name: "metrics", Port: 8080}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteEndpoints(ctx, svc, Endpoint{PodName: "app-0", IP: "10.2.0.5", NodeName: "node-a", Ports: []corev1.EndpointPort{{Name: "metrics", Port: 8080}}}); err != nil {
		t.Fatal(err)
	}

	// The collector's least-privilege RBAC, through a kubeconfig file as in production.
	token := c.CreateToken(t, "panorama-collector", CollectorRules())
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfigWithToken(kubeconfig, token); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.WarningHandler = rest.NoWarnings{} // v1 Endpoints is deprecated
	collector := kubernetes.NewForConfigOrDie(cfg)

	for name, cs := range map[string]kubernetes.Interface{"admin": admin, "collector": collector} {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.PodIP != "10.2.0.5" {
			t.Fatalf("%s: list pods: %v %+v", name, err, pods)
		}
		es, err := cs.DiscoveryV1().EndpointSlices("obs").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=app"})
		if err != nil || len(es.Items) != 1 || es.Items[0].Endpoints[0].Addresses[0] != "10.2.0.5" {
			t.Fatalf("%s: list endpointslices: %v %+v", name, err, es)
		}
		ep, err := cs.CoreV1().Endpoints("obs").Get(ctx, "app", metav1.GetOptions{})
		if err != nil || ep.Subsets[0].Addresses[0].TargetRef.Name != "app-0" {
			t.Fatalf("%s: get endpoints: %v %+v", name, err, ep)
		}
	}
	if _, err := collector.CoreV1().Secrets("obs").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("collector listing secrets: err = %v, want Forbidden", err)
	}

	// A watch (least privilege) sees the deletion.
	w, err := collector.CoreV1().Pods("obs").Watch(ctx, metav1.ListOptions{ResourceVersion: pod.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := c.DeletePodNow(ctx, "obs", "app-0"); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for deleted := false; !deleted; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed")
			}
			deleted = ev.Type == watch.Deleted
		case <-timeout:
			t.Fatal("no Deleted event within 10s")
		}
	}
	if _, err := admin.CoreV1().Pods("obs").Get(ctx, "app-0", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after DeletePodNow: err = %v, want NotFound", err)
	}
	t.Logf("start: etcd healthy after %s, kube-apiserver ready after %s; test body %s",
		c.EtcdStartup.Round(time.Millisecond), c.StartupTime.Round(time.Millisecond), time.Since(body).Round(time.Millisecond))
}
