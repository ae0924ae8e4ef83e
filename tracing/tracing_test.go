package tracing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/panorama-obs/panorama/topology"
)

// TestRole joins the parts as `panorama tracing` does: a request over
// OTLP/HTTP comes out of the Jaeger API and the topology, and is still
// there after the role is closed and started again on the same directory.
func TestRole(t *testing.T) {
	opts := DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.Receiver.GRPCAddress, opts.Receiver.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.ServiceGraph.TTL = 100 * time.Millisecond

	start := func() (*Tracing, *httptest.Server, func()) {
		reg := prometheus.NewRegistry()
		st, err := OpenEmbeddedStore(opts, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := New(opts, st, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		tr.Mount(mux.Handle)
		srv := httptest.NewServer(mux)
		var g run.Group
		tr.Register(&g)
		stop := make(chan struct{})
		g.Add(func() error { <-stop; return nil }, func(error) {})
		done := make(chan error, 1)
		go func() { done <- g.Run() }()
		return tr, srv, func() {
			close(stop)
			if err := <-done; err != nil {
				t.Errorf("run group: %v", err)
			}
			srv.Close()
			if err := tr.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}

	tr, srv, stop := start()
	t0 := time.Now().Add(-time.Minute).UnixNano()
	body := []byte(fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},"scopeSpans":[{"spans":[
	  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"%d","endTimeUnixNano":"%d"},
	  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174","name":"query","kind":3,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[{"key":"db.name","value":{"stringValue":"users"}}]}
	]}]}]}`, t0, t0+100e6, t0+10e6, t0+50e6))
	resp, err := http.Post("http://"+tr.HTTPAddr()+"/v1/traces", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("OTLP/HTTP: %d", resp.StatusCode)
	}
	waitForSpans := func(srv *httptest.Server) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r, err := http.Get(srv.URL + "/api/traces/5b8efff798038103d269b633813fc60c")
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				Data []struct {
					Spans []json.RawMessage `json:"spans"`
				} `json:"data"`
			}
			json.NewDecoder(r.Body).Decode(&out)
			r.Body.Close()
			if r.StatusCode == 200 && len(out.Data) == 1 && len(out.Data[0].Spans) == 2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("trace not served with its 2 spans (last status %d)", r.StatusCode)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitForSpans(srv)
	// (The root span also becomes user → web once it has waited its TTL.)
	topo := tr.ServiceGraph().Graph()
	if !slices.ContainsFunc(topo.Edges, func(e topology.Edge) bool {
		return e.From == "service/web" && e.To == "database/users" && e.Kind == topology.EdgeCalls
	}) {
		t.Errorf("topology edges = %+v, want service/web → database/users", topo.Edges)
	}
	stop()

	_, srv2, stop2 := start()
	defer stop2()
	waitForSpans(srv2)
	// The last dependency bucket was written when the role stopped.
	r, err := http.Get(fmt.Sprintf("%s/api/dependencies?endTs=%d&lookback=7200000", srv2.URL, time.Now().Add(time.Hour).UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var deps struct {
		Data []map[string]any `json:"data"`
	}
	json.NewDecoder(r.Body).Decode(&deps)
	if !slices.ContainsFunc(deps.Data, func(d map[string]any) bool {
		return d["parent"] == "web" && d["child"] == "users" && d["callCount"] == 1.0
	}) {
		t.Errorf("dependencies after restart = %v, want web → users once", deps.Data)
	}
}
