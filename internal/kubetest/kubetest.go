// Package kubetest runs a real Kubernetes control plane (etcd plus
// kube-apiserver, no controller manager, no scheduler, no kubelet) for
// integration tests, the way controller-runtime's envtest does, and offers
// helpers that stand in for the missing controllers.
//
// Binaries: $PANORAMA_KUBE_APISERVER, else <repo root>/.cache/bin/kube-apiserver;
// $PANORAMA_ETCD, else etcd from $PATH. `make test` installs both.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// ErrNotInstalled is returned (wrapped) by StartCluster when etcd or
// kube-apiserver cannot be found.
var ErrNotInstalled = errors.New("etcd/kube-apiserver not installed (`make test` installs them)")

// Timeouts for the two start phases; the ctx given to StartCluster can only
// shorten them.
const (
	etcdTimeout      = 30 * time.Second
	apiserverTimeout = 60 * time.Second
	maxStartAttempts = 5 // a randomly chosen port may be taken by the time the process binds it
)

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	URL     string // https://127.0.0.1:<port>
	Token   string // static bearer token of user "admin" in group system:masters
	CertDir string // the apiserver's --cert-dir (self-signed apiserver.crt/.key)
	CAFile  string // PEM bundle that verifies the serving certificate (CertDir/apiserver.crt)
	EtcdURL string
	Dir     string // working directory: etcd data, keys, logs (etcd.log, kube-apiserver.log)

	EtcdStartup, StartupTime time.Duration // time until etcd healthy; total time until /readyz

	caPEM           []byte
	client          kubernetes.Interface
	etcd, apiserver *process
	stopOnce        sync.Once
}

// Start starts a cluster for the test and stops it in t.Cleanup. Without the
// binaries the test is skipped, unless CI=true or PANORAMA_REQUIRE_KUBE=1, in
// which case it fails: a skipped integration test must not pass silently in CI.
func Start(t testing.TB) *Cluster {
	t.Helper()
	etcdBin, kasBin, err := findBinaries()
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("PANORAMA_REQUIRE_KUBE") == "1" {
			t.Fatalf("kubetest: %v (CI=true or PANORAMA_REQUIRE_KUBE=1: not skipping)", err)
		}
		t.Skipf("kubetest: skipping integration test: %v", err)
	}
	c, err := startCluster(t.Context(), t.TempDir(), nil, etcdBin, kasBin)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubetest: test failed; logs in %s\n%s", c.Dir, c.logTails())
		}
		c.Stop()
	})
	t.Logf("kubetest: kube-apiserver ready at %s in %s (etcd %s)", c.URL, c.StartupTime.Round(time.Millisecond), c.EtcdStartup.Round(time.Millisecond))
	return c
}

// StartCluster starts etcd and kube-apiserver with their state and logs in
// dir; process output is also copied to logw if it is not nil. ctx bounds the
// start only: the caller must call Stop. The error wraps ErrNotInstalled if a
// binary is missing.
func StartCluster(ctx context.Context, dir string, logw io.Writer) (*Cluster, error) {
	etcdBin, kasBin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	return startCluster(ctx, dir, logw, etcdBin, kasBin)
}

func startCluster(ctx context.Context, dir string, logw io.Writer, etcdBin, kasBin string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, err
	}
	if logw != nil {
		logw = &syncWriter{w: logw}
	}
	c := &Cluster{Dir: dir, CertDir: filepath.Join(dir, "certs")}
	ok := false
	defer func() { // also runs on panic
		if !ok {
			c.Stop()
		}
	}()
	begin := time.Now()

	if err := c.startEtcd(ctx, etcdBin, logw); err != nil {
		return nil, err
	}
	c.EtcdStartup = time.Since(begin)
	if err := c.startAPIServer(ctx, kasBin, logw); err != nil {
		return nil, err
	}
	c.StartupTime = time.Since(begin)
	ok = true
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context, bin string, logw io.Writer) error {
	dataDir := filepath.Join(c.Dir, "etcd")
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		if err := os.RemoveAll(dataDir); err != nil { // no state from a failed attempt
			return err
		}
		p, err := startProcess("etcd", filepath.Join(c.Dir, "etcd.log"), logw, bin,
			"--name=kubetest",
			"--data-dir="+dataDir,
			"--listen-client-urls="+client,
			"--advertise-client-urls="+client,
			"--listen-peer-urls="+peer,
			"--initial-advertise-peer-urls="+peer,
			"--initial-cluster=kubetest="+peer,
			"--logger=zap", "--log-outputs=stderr",
			// A single member elects itself after a random 0-1 election
			// timeout; shorten it (there are no peers to time out).
			"--heartbeat-interval=10", "--election-timeout=100",
		)
		if err != nil {
			return err
		}
		c.etcd, c.EtcdURL = p, client
		hc := &http.Client{Timeout: 2 * time.Second}
		err = waitFor(ctx, p, etcdTimeout, func(ctx context.Context) error {
			body, err := get(ctx, hc, client+"/health", "")
			if err == nil && !bytes.Contains(body, []byte(`"health":"true"`)) {
				err = fmt.Errorf("unhealthy: %s", body)
			}
			return err
		})
		if err == nil {
			return nil
		}
		p.stop(0)
		if attempt < maxStartAttempts && ctx.Err() == nil && p.addrInUse() {
			continue
		}
		return fmt.Errorf("etcd: %w\n%s", err, c.logTails())
	}
}

func (c *Cluster) startAPIServer(ctx context.Context, bin string, logw io.Writer) error {
	if err := os.MkdirAll(c.CertDir, 0o700); err != nil {
		return err
	}
	c.Token = randHex(16)
	tokenFile := filepath.Join(c.Dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(c.Token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	saPub, saKey, err := writeServiceAccountKeys(c.Dir)
	if err != nil {
		return err
	}
	c.CAFile = filepath.Join(c.CertDir, "apiserver.crt")

	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the cert does not exist yet; verified below
	}}
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		c.URL = "https://127.0.0.1:" + strconv.Itoa(ports[0])
		p, err := startProcess("kube-apiserver", filepath.Join(c.Dir, "kube-apiserver.log"), logw, bin,
			"--etcd-servers="+c.EtcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1", // also the IP SAN of the self-signed cert
			"--secure-port="+strconv.Itoa(ports[0]),
			"--cert-dir="+c.CertDir,
			"--token-auth-file="+tokenFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-account-key-file="+saPub,
			"--service-account-signing-key-file="+saKey,
			"--service-cluster-ip-range=10.0.0.0/24",
			// No controller manager: pods must not need a default ServiceAccount.
			"--disable-admission-plugins=ServiceAccount",
			"--allow-privileged=true",
			"--enable-priority-and-fairness=false",
			// The reconciler would try (and fail) to publish 127.0.0.1 as the
			// endpoint of default/kubernetes.
			"--endpoint-reconciler-type=none",
			"--profiling=false",
		)
		if err != nil {
			return err
		}
		c.apiserver = p
		err = waitFor(ctx, p, apiserverTimeout, func(ctx context.Context) error {
			_, err := get(ctx, insecure, c.URL+"/readyz", c.Token)
			return err
		})
		if err == nil {
			break
		}
		p.stop(0)
		if attempt < maxStartAttempts && ctx.Err() == nil && p.addrInUse() {
			continue
		}
		return fmt.Errorf("kube-apiserver: %w\n%s", err, c.logTails())
	}

	if c.caPEM, err = os.ReadFile(c.CAFile); err != nil {
		return fmt.Errorf("kube-apiserver serving certificate: %w", err)
	}
	if c.client, err = kubernetes.NewForConfig(c.RESTConfig()); err != nil {
		return err
	}
	return nil
}

// Stop kills kube-apiserver and etcd and waits for them to exit. It is
// idempotent and safe on a partially started cluster.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		// The state is thrown away: SIGKILL spares the apiserver's ~1.2 s
		// graceful shutdown. etcd stops cleanly on SIGTERM in milliseconds.
		c.apiserver.stop(0)
		c.etcd.stop(3 * time.Second)
	})
}

// RESTConfig returns a fresh admin config that verifies the serving
// certificate. Deprecation warnings (v1 Endpoints) are not printed.
func (c *Cluster) RESTConfig() *rest.Config { return c.RESTConfigWithToken(c.Token) }

// RESTConfigWithToken is RESTConfig authenticated with another bearer token,
// e.g. one from CreateToken.
func (c *Cluster) RESTConfigWithToken(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS:             1000,
		Burst:           2000,
		WarningHandler:  rest.NoWarnings{},
	}
}

// Client returns the admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// WriteKubeconfig writes an admin kubeconfig (server URL, embedded CA,
// bearer token) to path, the way the collector reaches a production cluster.
func (c *Cluster) WriteKubeconfig(path string) error {
	return c.WriteKubeconfigWithToken(path, c.Token)
}

// WriteKubeconfigWithToken is WriteKubeconfig for another bearer token.
func (c *Cluster) WriteKubeconfigWithToken(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	cfg.CurrentContext = "kubetest"
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *Cluster) logTails() string {
	return tail(filepath.Join(c.Dir, "kube-apiserver.log"), 40) + tail(filepath.Join(c.Dir, "etcd.log"), 20)
}

// findBinaries locates etcd and kube-apiserver; the error wraps ErrNotInstalled.
func findBinaries() (etcdBin, kasBin string, err error) {
	kasBin = os.Getenv("PANORAMA_KUBE_APISERVER")
	if kasBin == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return "", "", fmt.Errorf("%w: %v", ErrNotInstalled, err)
		}
		kasBin = filepath.Join(root, ".cache", "bin", "kube-apiserver")
	}
	if fi, err := os.Stat(kasBin); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("%w: no executable kube-apiserver at %s (or set PANORAMA_KUBE_APISERVER)", ErrNotInstalled, kasBin)
	}
	etcdBin = os.Getenv("PANORAMA_ETCD")
	if etcdBin == "" {
		etcdBin = "etcd"
	}
	if etcdBin, err = exec.LookPath(etcdBin); err != nil {
		return "", "", fmt.Errorf("%w: %v (or set PANORAMA_ETCD)", ErrNotInstalled, err)
	}
	return etcdBin, kasBin, nil
}

// freePorts returns n distinct loopback ports that are free right now, chosen
// at random below the kernel's ephemeral range (so that no outgoing
// connection grabs them before the process binds them). The caller retries on
// "address already in use".
func freePorts(n int) ([]int, error) {
	hi := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > 2048 && lo < hi {
				hi = lo
			}
		}
	}
	lo := hi / 2
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100 {
			return nil, fmt.Errorf("no free loopback port in [%d,%d)", lo, hi)
		}
		p := lo + mrand.IntN(hi-lo)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		if len(ports) == 0 || ports[0] != p {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// writeServiceAccountKeys writes an RSA key pair for signing and verifying
// service-account tokens.
func writeServiceAccountKeys(dir string) (pub, key string, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return "", "", err
	}
	pub, key = filepath.Join(dir, "sa.pub"), filepath.Join(dir, "sa.key")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		return "", "", err
	}
	return pub, key, os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

func get(ctx context.Context, hc *http.Client, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// waitFor polls check until it succeeds, the process exits, ctx ends or the
// timeout expires.
func waitFor(ctx context.Context, p *process, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before becoming ready: %v", p.name, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v (last check: %v)", p.name, timeout, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// process is a child process in its own process group, logging to a file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid after done
}

func startProcess(name, logPath string, logw io.Writer, bin string, args ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if logw != nil {
		cmd.Stdout = io.MultiWriter(f, logw)
		cmd.Stderr = cmd.Stdout
	}
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	pgid := -p.cmd.Process.Pid
	if grace > 0 {
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	<-p.done
}

func (p *process) addrInUse() bool {
	b, _ := os.ReadFile(p.logPath)
	return bytes.Contains(b, []byte("address already in use"))
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("--- %s: %v\n", filepath.Base(path), err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s\n", len(lines), path, strings.Join(lines, "\n"))
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
