package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tracing is a running `panorama tracing`.
type Tracing struct {
	*Process
	// URL is the Jaeger API and /metrics base (http://host:port).
	URL string
	// GRPCAddr and HTTPAddr are the OTLP addresses.
	GRPCAddr, HTTPAddr string
	DataDir            string
}

// StartTracing runs `panorama tracing` on free web, OTLP/gRPC and
// OTLP/HTTP addresses with its data in dataDir (a new temporary directory
// when empty), and waits for /-/ready.
func StartTracing(t testing.TB, dataDir string, args ...string) *Tracing {
	t.Helper()
	bin := PanoramaBinary(t)
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "data")
	}
	p, addrs := startWithRetry(t, 3, func(addrs []string) (*Process, string, error) {
		a := append([]string{"tracing",
			"--web.listen-address=" + addrs[0],
			"--otlp.grpc-address=" + addrs[1],
			"--otlp.http-address=" + addrs[2],
			"--data.dir=" + dataDir,
		}, args...)
		p, err := startProcess(t, "tracing", bin, a...)
		return p, "http://" + addrs[0] + "/-/ready", err
	})
	tr := &Tracing{Process: p, URL: "http://" + addrs[0], GRPCAddr: addrs[1], HTTPAddr: addrs[2], DataDir: dataDir}
	t.Cleanup(func() {
		if err := tr.Stop(); err != nil && !tr.killed {
			t.Errorf("tracing (pid %d) did not exit cleanly on SIGTERM: %v", tr.Pid(), err)
		}
	})
	return tr
}

// JaegerGet GETs a Jaeger API path and decodes the answer into v; it
// returns the HTTP status.
func (tr *Tracing) JaegerGet(ctx context.Context, path string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tr.URL+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return resp.StatusCode, fmt.Errorf("GET %s: Content-Type %q: %s", path, ct, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: %w: %s", path, err, b)
	}
	return resp.StatusCode, nil
}

// Metrics returns the /metrics text.
func (tr *Tracing) Metrics(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tr.URL+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// MetricValue finds the sample line that starts with series (name and
// labels exactly as exposed) in a /metrics text and returns its value.
func MetricValue(text, series string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.Fields(rest)[0], true
		}
	}
	return "", false
}
