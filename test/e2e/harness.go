// Package e2e tests Panorama as a user runs it: through the real panorama
// binary, next to real peers (node-exporter, the reference Prometheus 3.9.1
// and its promtool, Debian's Prometheus 2.42).
//
// This file is the harness every role's end-to-end tests share: building
// the binary once, starting and stopping processes with their logs kept,
// free addresses, the Prometheus HTTP API and a remote-write client.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// Paths of the peer binaries, relative to the repository root when not
// absolute.
const (
	RefPrometheusPath    = ".cache/bin/prometheus"
	RefPromtoolPath      = ".cache/bin/promtool"
	ThanosPath           = ".cache/bin/thanos"
	DebianPrometheusPath = "/usr/bin/prometheus"
	NodeExporterPath     = "/usr/bin/prometheus-node-exporter"
)

var panoramaBin string

// SetPanoramaBinary records the binary TestMain built.
func SetPanoramaBinary(path string) { panoramaBin = path }

// PanoramaBinary is the binary TestMain built.
func PanoramaBinary(t testing.TB) string {
	t.Helper()
	if panoramaBin == "" {
		t.Fatal("panorama binary not built: TestMain must call testenv.BuildPanorama and SetPanoramaBinary")
	}
	return panoramaBin
}

// RequireBinary returns the absolute path of a peer binary (relative paths
// are taken from the repository root). A missing one skips the test, but
// fails it under CI=true: CI must not skip silently.
func RequireBinary(t testing.TB, path string) string {
	t.Helper()
	if !filepath.IsAbs(path) {
		root, err := testenv.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(root, path)
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("%s is missing: run make test-deps", path)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// FreeAddr returns a 127.0.0.1 address with a port the kernel just handed
// out (port 0) and that is free again. Another process may take it before
// ours binds it, so starters retry on "address already in use".
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Process is a started binary with its output in a log file.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string

	t       testing.TB
	killed  bool
	done    chan struct{}
	waitErr error
	logFile *os.File
}

// StartProcess starts bin with args; stdout and stderr go to a file in a
// temporary directory, which is dumped with t.Log if the test fails. The
// process is stopped (SIGTERM, then SIGKILL after 10 s) in t.Cleanup.
func StartProcess(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p, err := startProcess(t, name, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startProcess(t testing.TB, name, bin string, args ...string) (*Process, error) {
	f, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, LogPath: f.Name(), t: t, done: make(chan struct{}), logFile: f}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			p.DumpLogs()
		}
		f.Close()
	})
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Logs is everything the process wrote so far.
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("<cannot read %s: %v>", p.LogPath, err)
	}
	return string(b)
}

// DumpLogs writes the process' output (its last 64 KiB) to the test log.
func (p *Process) DumpLogs() {
	logs := p.Logs()
	if len(logs) > 64<<10 {
		logs = "…" + logs[len(logs)-64<<10:]
	}
	p.t.Logf("==== %s (pid %d) output ====\n%s==== end of %s ====", p.Name, p.Pid(), logs, p.Name)
}

// Exited reports whether the process ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Wait waits for the process to end by itself, up to timeout.
func (p *Process) Wait(timeout time.Duration) (exitCode int, err error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		return -1, fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
	return p.Cmd.ProcessState.ExitCode(), nil
}

// Stop sends SIGTERM, and SIGKILL if the process is still there after 10 s.
// It is idempotent and returns the exit error (nil after a clean exit).
func (p *Process) Stop() error {
	if done, err := p.Exited(); done {
		return err
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Logf("%s (pid %d) ignored SIGTERM for 10 s: SIGKILL", p.Name, p.Pid())
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
	return p.waitErr
}

// Kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (p *Process) Kill() {
	if done, _ := p.Exited(); done {
		return
	}
	p.killed = true
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// WaitHTTP polls url until it answers 200, failing early if the process
// ends. It returns an error rather than failing so starters can retry.
func (p *Process) WaitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited before %s answered: %v", p.Name, url, err)
		}
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not ready after %s (last: %s)", p.Name, url, timeout, last)
}

// startWithRetry starts a server on fresh free addresses, retrying when
// another process took one of them between FreeAddr and bind.
func startWithRetry(t testing.TB, naddrs int, start func(addrs []string) (*Process, string, error)) (*Process, []string) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		addrs := make([]string, naddrs)
		for i := range addrs {
			addrs[i] = FreeAddr(t)
		}
		p, readyURL, err := start(addrs)
		if err != nil {
			t.Fatal(err)
		}
		if err = p.WaitHTTP(readyURL, 60*time.Second); err == nil {
			return p, addrs
		}
		lastErr = err
		if strings.Contains(p.Logs(), "address already in use") {
			t.Logf("%s: port taken, retrying: %v", p.Name, err)
			p.Stop()
			continue
		}
		break
	}
	t.Fatal(lastErr)
	return nil, nil
}

// Collector is a running `panorama collector`.
type Collector struct {
	*Process
	// Addr is the web address (host:port); URL is http://Addr.
	Addr, URL string
	// GRPCAddr is the StoreAPI address.
	GRPCAddr   string
	DataDir    string
	ConfigFile string
	API        *API
}

// CollectorOptions tune StartCollector.
type CollectorOptions struct {
	// DataDir reuses a TSDB directory (e.g. across a restart); a new
	// temporary one when empty.
	DataDir string
	// Addr is the web listen address; a free one when empty. The
	// configuration may refer to it as {{WEB}}.
	Addr string
	// Args are extra command-line flags.
	Args []string
}

// StartCollector writes config to a file and runs `panorama collector`
// on it, with free web and gRPC addresses on 127.0.0.1, and waits for
// /-/ready. In config, {{WEB}} and {{GRPC}} are replaced with the
// collector's own addresses (for a job scraping the collector itself).
func StartCollector(t testing.TB, config string, o CollectorOptions) *Collector {
	t.Helper()
	bin := PanoramaBinary(t)
	dataDir := o.DataDir
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "data")
	}
	cfgDir := t.TempDir()
	naddrs := 2
	if o.Addr != "" {
		naddrs = 1
	}
	var cfgFile string
	p, addrs := startWithRetry(t, naddrs, func(addrs []string) (*Process, string, error) {
		web, grpc := o.Addr, addrs[0]
		if web == "" {
			web, grpc = addrs[0], addrs[1]
		}
		cfgFile = filepath.Join(cfgDir, "collector.yml")
		content := strings.NewReplacer("{{WEB}}", web, "{{GRPC}}", grpc).Replace(config)
		if err := os.WriteFile(cfgFile, []byte(content), 0o644); err != nil {
			return nil, "", err
		}
		args := append([]string{"collector",
			"--config.file=" + cfgFile,
			"--web.listen-address=" + web,
			"--grpc-address=" + grpc,
			"--storage.tsdb.path=" + dataDir,
		}, o.Args...)
		p, err := startProcess(t, "collector", bin, args...)
		return p, "http://" + web + "/-/ready", err
	})
	c := &Collector{Process: p, DataDir: dataDir, ConfigFile: cfgFile}
	if o.Addr != "" {
		c.Addr, c.GRPCAddr = o.Addr, addrs[0]
	} else {
		c.Addr, c.GRPCAddr = addrs[0], addrs[1]
	}
	c.URL = "http://" + c.Addr
	c.API = NewAPI(c.URL)
	// Runs before the process' own cleanup: a collector must exit 0 on
	// SIGTERM, within the 10 s Stop allows.
	t.Cleanup(func() {
		start := time.Now()
		if err := c.Stop(); err != nil && !c.killed {
			t.Errorf("collector (pid %d) did not exit cleanly on SIGTERM after %s: %v", c.Pid(), time.Since(start).Round(time.Millisecond), err)
		}
	})
	return c
}

// Federator is a running `panorama federator` (or, from StartThanosQuery,
// a Thanos Querier: both serve /api/v1 and a StoreAPI).
type Federator struct {
	*Process
	// Addr is the web address (host:port); URL is http://Addr.
	Addr, URL string
	// GRPCAddr is the StoreAPI address.
	GRPCAddr string
	API      *API
}

// StartFederator runs `panorama federator` with the given extra flags
// (--endpoint=…, --query.replica-label=…) on free web and gRPC addresses
// and waits for /-/ready (every endpoint asked once).
func StartFederator(t testing.TB, args ...string) *Federator {
	t.Helper()
	bin := PanoramaBinary(t)
	p, addrs := startWithRetry(t, 2, func(addrs []string) (*Process, string, error) {
		a := append([]string{"federator",
			"--web.listen-address=" + addrs[0],
			"--grpc-address=" + addrs[1],
			"--endpoint.info-interval=1s",
		}, args...)
		p, err := startProcess(t, "federator", bin, a...)
		return p, "http://" + addrs[0] + "/-/ready", err
	})
	return &Federator{Process: p, Addr: addrs[0], URL: "http://" + addrs[0], GRPCAddr: addrs[1], API: NewAPI("http://" + addrs[0])}
}

// StartThanosQuery runs `thanos query` (built from tools/thanos) with the
// given extra flags on free HTTP and gRPC addresses and waits for
// /-/ready. Thanos answers ready before it has asked its endpoints: wait
// for them with Eventually.
func StartThanosQuery(t testing.TB, args ...string) *Federator {
	t.Helper()
	bin := RequireBinary(t, ThanosPath)
	p, addrs := startWithRetry(t, 2, func(addrs []string) (*Process, string, error) {
		a := append([]string{"query",
			"--http-address=" + addrs[0],
			"--grpc-address=" + addrs[1],
			"--store.sd-dns-interval=1s",
		}, args...)
		p, err := startProcess(t, "thanos-query", bin, a...)
		return p, "http://" + addrs[0] + "/-/ready", err
	})
	return &Federator{Process: p, Addr: addrs[0], URL: "http://" + addrs[0], GRPCAddr: addrs[1], API: NewAPI("http://" + addrs[0])}
}

// Prometheus is a running Prometheus server (the reference 3.9.1 or
// Debian's 2.42).
type Prometheus struct {
	*Process
	Addr, URL string
	DataDir   string
	API       *API
}

// StartPrometheus runs the Prometheus binary bin on config (where {{WEB}}
// is its own address) with a free listen address and a temporary TSDB,
// and waits for /-/ready.
func StartPrometheus(t testing.TB, name, bin, config string, extraArgs ...string) *Prometheus {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgDir := t.TempDir()
	p, addrs := startWithRetry(t, 1, func(addrs []string) (*Process, string, error) {
		cfgFile := filepath.Join(cfgDir, "prometheus.yml")
		if err := os.WriteFile(cfgFile, []byte(strings.ReplaceAll(config, "{{WEB}}", addrs[0])), 0o644); err != nil {
			return nil, "", err
		}
		args := append([]string{
			"--config.file=" + cfgFile,
			"--storage.tsdb.path=" + dataDir,
			"--web.listen-address=" + addrs[0],
		}, extraArgs...)
		p, err := startProcess(t, name, bin, args...)
		return p, "http://" + addrs[0] + "/-/ready", err
	})
	return &Prometheus{Process: p, Addr: addrs[0], URL: "http://" + addrs[0], DataDir: dataDir, API: NewAPI("http://" + addrs[0])}
}

// StartReferencePrometheus runs the reference Prometheus 3.9.1 with the
// remote-write receiver on.
func StartReferencePrometheus(t testing.TB, config string, extraArgs ...string) *Prometheus {
	t.Helper()
	bin := RequireBinary(t, RefPrometheusPath)
	return StartPrometheus(t, "prometheus-3.9.1", bin, config, append([]string{"--web.enable-remote-write-receiver"}, extraArgs...)...)
}

// StartDebianPrometheus runs Debian's Prometheus 2.42.
func StartDebianPrometheus(t testing.TB, config string, extraArgs ...string) *Prometheus {
	t.Helper()
	bin := RequireBinary(t, DebianPrometheusPath)
	return StartPrometheus(t, "prometheus-2.42", bin, config, extraArgs...)
}

// NodeExporter is a running prometheus-node-exporter.
type NodeExporter struct {
	*Process
	Addr string
}

// StartNodeExporter runs node-exporter on a free address and waits until
// /metrics answers.
func StartNodeExporter(t testing.TB, extraArgs ...string) *NodeExporter {
	t.Helper()
	bin := RequireBinary(t, NodeExporterPath)
	p, addrs := startWithRetry(t, 1, func(addrs []string) (*Process, string, error) {
		p, err := startProcess(t, "node-exporter", bin, append([]string{"--web.listen-address=" + addrs[0]}, extraArgs...)...)
		return p, "http://" + addrs[0] + "/metrics", err
	})
	return &NodeExporter{Process: p, Addr: addrs[0]}
}

// API is a client of the Prometheus HTTP API (/api/v1).
type API struct {
	URL    string
	Client *http.Client
}

// NewAPI returns a client of the server at base (http://host:port).
func NewAPI(base string) *API {
	return &API{URL: strings.TrimRight(base, "/"), Client: &http.Client{Timeout: 30 * time.Second}}
}

// Response is the Prometheus API envelope.
type Response struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`

	// HTTPStatus and Body are the raw answer.
	HTTPStatus int    `json:"-"`
	Body       []byte `json:"-"`
}

// QueryData is the data of a query answer; Result is kept raw.
type QueryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// Do sends a GET (params in the URL) or, with post, a form POST to
// /api/v1/<path> and decodes the envelope. Non-2xx answers are not
// errors: they come back with Status "error" and the HTTP status.
func (a *API) Do(ctx context.Context, post bool, path string, params url.Values) (*Response, error) {
	u := a.URL + "/api/v1/" + strings.TrimLeft(path, "/")
	var req *http.Request
	var err error
	if post {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(params.Encode()))
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	}
	if err != nil {
		return nil, err
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &Response{HTTPStatus: resp.StatusCode, Body: body}
	if err := json.Unmarshal(body, r); err != nil {
		return r, fmt.Errorf("GET %s: HTTP %d, not the API's JSON: %v: %.500s", u, resp.StatusCode, err, body)
	}
	return r, nil
}

// FormatTime formats t as the API's seconds with milliseconds.
func FormatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1e3, 'f', 3, 64)
}

// Query runs an instant query at ts (the server's now when ts is zero).
func (a *API) Query(ctx context.Context, q string, ts time.Time) (*Response, error) {
	p := url.Values{"query": {q}}
	if !ts.IsZero() {
		p.Set("time", FormatTime(ts))
	}
	return a.Do(ctx, true, "query", p)
}

// QueryRange runs a range query.
func (a *API) QueryRange(ctx context.Context, q string, start, end time.Time, step time.Duration) (*Response, error) {
	return a.Do(ctx, true, "query_range", url.Values{
		"query": {q},
		"start": {FormatTime(start)},
		"end":   {FormatTime(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	})
}

// Sample is one value of a vector result, decoded.
type Sample struct {
	Metric map[string]string
	T      float64
	V      string
}

// Float is the sample's value as a number (NaN when unparsable).
func (s Sample) Float() float64 {
	f, err := strconv.ParseFloat(s.V, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// Vector runs an instant query that must succeed with a vector result and
// returns its samples (float samples only).
func (a *API) Vector(ctx context.Context, q string, ts time.Time) ([]Sample, error) {
	r, err := a.Query(ctx, q, ts)
	if err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: HTTP %d %s: %s", q, r.HTTPStatus, r.ErrorType, r.Error)
	}
	var d struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return nil, fmt.Errorf("query %q: %v: %s", q, err, r.Data)
	}
	if d.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", q, d.ResultType)
	}
	out := make([]Sample, 0, len(d.Result))
	for _, s := range d.Result {
		ts, _ := s.Value[0].(float64)
		v, _ := s.Value[1].(string)
		out = append(out, Sample{Metric: s.Metric, T: ts, V: v})
	}
	return out, nil
}

// RemoteWriteResult is the answer to one remote-write request.
type RemoteWriteResult struct {
	Status int
	Body   string
}

// RemoteWrite sends series as one Prometheus remote-write 1.0 request
// (protobuf, snappy) to url (…/api/v1/write).
func RemoteWrite(ctx context.Context, client *http.Client, url string, series []prompb.TimeSeries) (RemoteWriteResult, error) {
	req := &prompb.WriteRequest{Timeseries: series}
	raw, err := req.Marshal()
	if err != nil {
		return RemoteWriteResult{}, err
	}
	return PostRemoteWrite(ctx, client, url, snappy.Encode(nil, raw))
}

// PostRemoteWrite sends an already encoded body with remote-write 1.0
// headers.
func PostRemoteWrite(ctx context.Context, client *http.Client, url string, body []byte) (RemoteWriteResult, error) {
	if client == nil {
		client = http.DefaultClient
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return RemoteWriteResult{}, err
	}
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	hreq.Header.Set("User-Agent", "panorama-e2e")
	resp, err := client.Do(hreq)
	if err != nil {
		return RemoteWriteResult{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return RemoteWriteResult{Status: resp.StatusCode, Body: string(b)}, nil
}

// Eventually calls f every interval until it returns nil, failing the
// test with f's last error after timeout.
func Eventually(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}
