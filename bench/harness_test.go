package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

var (
	workDir   string // shared by the benchmarks of one run; holds the panorama binary
	buildOnce sync.Once
	buildErr  error
	panorama  string
)

func TestMain(m *testing.M) {
	var err error
	workDir, err = os.MkdirTemp("", "panorama-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if os.Getenv("PANORAMA_BENCH_KEEP") == "1" {
		fmt.Fprintf(os.Stderr, "bench: kept %s\n", workDir)
	} else {
		os.RemoveAll(workDir)
	}
	os.Exit(code)
}

// benchDir is a new directory under the run's working directory, removed
// after the benchmark unless PANORAMA_BENCH_KEEP=1.
func benchDir(b *testing.B, name string) string {
	b.Helper()
	dir, err := os.MkdirTemp(workDir, b.Name()+"-"+name+"-")
	if err != nil {
		b.Fatal(err)
	}
	if os.Getenv("PANORAMA_BENCH_KEEP") != "1" {
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	return dir
}

// buildPanorama builds ./cmd/panorama once per run as the Makefile does
// (testenv.BuildPanorama), or uses $PANORAMA_BENCH_BINARY when set.
func buildPanorama(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("PANORAMA_BENCH_BINARY"); p != "" {
			panorama = p
			_, buildErr = os.Stat(p)
			return
		}
		start := time.Now()
		if panorama, buildErr = testenv.BuildPanorama(workDir); buildErr != nil {
			return
		}
		fmt.Printf("bench: built %s in %s\n", panorama, time.Since(start).Round(time.Second))
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return panorama
}

// prometheusBinary is the reference Prometheus `make test-deps` builds.
func prometheusBinary(b *testing.B) string {
	b.Helper()
	p := os.Getenv("PANORAMA_PROMETHEUS")
	if p == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			b.Fatal(err)
		}
		p = filepath.Join(root, ".cache", "bin", "prometheus")
	}
	if _, err := os.Stat(p); err != nil {
		missing(b, fmt.Sprintf("reference Prometheus not found at %s (`make test-deps` builds it)", p))
	}
	return p
}

// prometheusSlicelabelsBinary is the reference Prometheus built with the
// slicelabels tag (`make bench` builds it), or "" when absent: the same
// labels layout as the panorama binary, which Thanos' StoreAPI requires.
func prometheusSlicelabelsBinary() string {
	p := os.Getenv("PANORAMA_PROMETHEUS_SLICELABELS")
	if p == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return ""
		}
		p = filepath.Join(root, ".cache", "bin", "prometheus-slicelabels")
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// victoriaMetricsBinary is Debian's victoria-metrics, or "" when absent.
func victoriaMetricsBinary() string {
	if p := os.Getenv("PANORAMA_VICTORIAMETRICS"); p != "" {
		return p
	}
	if p, err := exec.LookPath("victoria-metrics"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/victoria-metrics"); err == nil {
		return "/usr/bin/victoria-metrics"
	}
	return ""
}

// missing skips, or fails where a skip must not pass silently (CI).
func missing(b *testing.B, why string) {
	b.Helper()
	if os.Getenv("CI") == "true" {
		b.Fatal(why)
	}
	b.Skip(why)
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	b.Helper()
	d := envDurationOrZero(b, name, def)
	if d == 0 {
		b.Fatalf("%s=%q: want a positive duration such as 5s", name, os.Getenv(name))
	}
	return d
}

// envDurationOrZero is envDuration where 0 turns something off.
func envDurationOrZero(b *testing.B, name string, def time.Duration) time.Duration {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		b.Fatalf("%s=%q: want a duration such as 5s", name, v)
	}
	return d
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// server is one child process under test.
type server struct {
	name    string
	addr    string // host:port of its HTTP API
	dir     string // its own data directory
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

// startServer runs bin with args(addr, dataDir) and waits for readyPath to
// answer 200. A port taken between freeAddr and the child binding it is
// retried with another port.
func startServer(b *testing.B, name, bin string, env []string, readyPath string, args func(addr, dir string) []string) *server {
	b.Helper()
	base := benchDir(b, name)
	var lastErr error
	for attempt := range 4 {
		addr, err := freeAddr()
		if err != nil {
			b.Fatal(err)
		}
		s := &server{name: name, addr: addr, dir: filepath.Join(base, fmt.Sprintf("data-%d", attempt)), logPath: filepath.Join(base, fmt.Sprintf("%s-%d.log", name, attempt)), exited: make(chan struct{})}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			b.Fatal(err)
		}
		logf, err := os.Create(s.logPath)
		if err != nil {
			b.Fatal(err)
		}
		s.cmd = exec.Command(bin, args(addr, s.dir)...)
		s.cmd.Dir = base
		s.cmd.Env = append(os.Environ(), env...)
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			logf.Close()
			b.Fatalf("start %s: %v", name, err)
		}
		go func() {
			s.waitErr = s.cmd.Wait()
			logf.Close()
			close(s.exited)
		}()
		if err := s.waitReady(readyPath, 2*time.Minute); err != nil {
			s.stop()
			lastErr = err
			if strings.Contains(s.logTail(4096), "address already in use") {
				continue
			}
			b.Fatalf("%s did not become ready: %v\n%s", name, err, s.logTail(4096))
		}
		b.Cleanup(s.stop)
		return s
	}
	b.Fatalf("%s: no free port after retries: %v", name, lastErr)
	return nil
}

func (s *server) waitReady(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("exited: %v", s.waitErr)
		default:
		}
		resp, err := http.Get(s.url(path))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s", path, timeout)
}

// alive fails the benchmark if the process has exited.
func (s *server) alive(b *testing.B) {
	b.Helper()
	select {
	case <-s.exited:
		b.Fatalf("%s exited: %v\n%s", s.name, s.waitErr, s.logTail(4096))
	default:
	}
}

// stop sends SIGTERM to the process group and SIGKILL after 30 s.
func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.exited
	}
}

func (s *server) logTail(n int64) string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	out, _ := io.ReadAll(f)
	return string(out)
}

// cpuSeconds is the process' user plus system time so far.
func (s *server) cpuSeconds() (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc/<pid>/stat")
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc/<pid>/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// timedQuery runs GET /api/v1/query for expr at evalTime (seconds, as the
// API takes them) and returns the time from sending the request to reading
// the last byte of the answer, and the answer; a status other than 200 is
// an error.
func (s *server) timedQuery(client *http.Client, expr, evalTime string) (time.Duration, []byte, error) {
	u := s.url("/api/v1/query") + "?" + url.Values{"query": {expr}, "time": {evalTime}}.Encode()
	start := time.Now()
	resp, err := client.Get(u)
	if err != nil {
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("%s: %q: %s: %s", s.name, expr, resp.Status, body)
	}
	return d, body, nil
}

// rssBytes is VmRSS from /proc/<pid>/status.
func (s *server) rssBytes() (float64, error) {
	m, err := s.memStatus()
	return m.rss, err
}

// memStatus is the process's resident memory from /proc/<pid>/status:
// VmRSS, and its anonymous (heap, stacks) and file-backed (the mapped
// executable, mostly) parts.
type memStatus struct{ rss, anon, file float64 }

func (s *server) memStatus() (memStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return memStatus{}, err
	}
	defer f.Close()
	var m memStatus
	fields := map[string]*float64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file}
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for prefix, dst := range fields {
			v, ok := strings.CutPrefix(sc.Text(), prefix)
			if !ok {
				continue
			}
			fs := strings.Fields(v)
			if len(fs) != 2 || fs[1] != "kB" {
				return m, fmt.Errorf("unexpected line %q in /proc/<pid>/status", sc.Text())
			}
			kb, err := strconv.ParseFloat(fs[0], 64)
			if err != nil {
				return m, err
			}
			*dst = kb * 1024
			found++
		}
	}
	if found != len(fields) {
		return m, errors.New("no VmRSS, RssAnon or RssFile in /proc/<pid>/status")
	}
	return m, sc.Err()
}

// metric sums the samples of one metric in the server's /metrics whose
// label text contains every one of labelParts (e.g. `type="promscrape"`).
// found is false when no sample matched.
func (s *server) metric(name string, labelParts ...string) (sum float64, found bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url("/metrics"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("%s /metrics: %s", s.name, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(line) == 0 || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		var lbls string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			lbls, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // a longer name
		}
		ok := true
		for _, p := range labelParts {
			if !strings.Contains(lbls, p) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %q: %v", s.name, line, err)
		}
		sum += v
		found = true
	}
	return sum, found, sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var t float64
	for _, x := range xs {
		t += x
	}
	return t / float64(len(xs))
}

// writeConfig writes the one configuration file every server reads: the
// collector's (a Prometheus file with the required cluster label), which
// Prometheus and VictoriaMetrics read as it is.
func writeConfig(b *testing.B, interval time.Duration, addrs []string) string {
	b.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  external_labels:\n    cluster: bench\n", interval, interval)
	if len(addrs) == 0 {
		sb.WriteString("scrape_configs: []\n")
	} else {
		sb.WriteString("scrape_configs:\n  - job_name: synthetic\n    static_configs:\n")
		for i, a := range addrs {
			fmt.Fprintf(&sb, "      - targets: [%q]\n        labels: {", a)
			for j, l := range TargetLabels(i) {
				if j > 0 {
					sb.WriteString(", ")
				}
				fmt.Fprintf(&sb, "%s: %q", l.Name, l.Value)
			}
			sb.WriteString("}\n")
		}
	}
	path := filepath.Join(benchDir(b, "config"), "scrape.yml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// startCollector runs the collector as `make run` would, but on loopback
// ports; its remote-write receiver is on by default.
func startCollector(b *testing.B, cfg string) *server {
	b.Helper()
	bin := buildPanorama(b)
	var env []string
	if e := os.Getenv("PANORAMA_BENCH_COLLECTOR_ENV"); e != "" {
		env = strings.Fields(e)
	}
	return startServer(b, "collector", bin, env, "/-/ready", func(addr, dir string) []string {
		return []string{"collector",
			"--config.file=" + cfg,
			"--storage.tsdb.path=" + dir,
			"--web.listen-address=" + addr,
			"--grpc-address=127.0.0.1:0",
		}
	})
}

func startPrometheus(b *testing.B, cfg string, remoteWrite bool) *server {
	b.Helper()
	return startPrometheusBinary(b, "prometheus", prometheusBinary(b), cfg, remoteWrite)
}

func startPrometheusBinary(b *testing.B, name, bin, cfg string, remoteWrite bool) *server {
	b.Helper()
	return startServer(b, name, bin, nil, "/-/ready", func(addr, dir string) []string {
		args := []string{
			"--config.file=" + cfg,
			"--storage.tsdb.path=" + dir,
			"--web.listen-address=" + addr,
		}
		if remoteWrite {
			args = append(args, "--web.enable-remote-write-receiver")
		}
		return args
	})
}

func startVictoriaMetrics(b *testing.B, bin, cfg string) *server {
	b.Helper()
	return startServer(b, "victoriametrics", bin, nil, "/health", func(addr, dir string) []string {
		return []string{
			"-promscrape.config=" + cfg,
			"-storageDataPath=" + dir,
			"-httpListenAddr=" + addr,
		}
	})
}
