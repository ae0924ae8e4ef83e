package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestCollectorCrashKeepsAcknowledgedSamples remote-writes batches in a loop,
// kills the collector with SIGKILL in the middle of the stream, restarts it
// on the same data directory and checks that every sample of every batch
// acknowledged with a 2xx is there, with its exact value.
func TestCollectorCrashKeepsAcknowledgedSamples(t *testing.T) {
	const (
		cluster = "crash"
		nSeries = 20
		metric  = "crash_test_value"
	)
	cfg := `
global:
  external_labels:
    cluster: ` + cluster + `
scrape_configs: []
`
	col := StartCollector(t, cfg, CollectorOptions{})
	dataDir := col.DataDir
	writeURL := col.URL + "/api/v1/write"

	type key struct {
		series int
		t      int64
	}
	var (
		mtx   sync.Mutex
		acked = map[key]float64{}
		sent  = map[key]float64{}
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	stop := make(chan struct{})
	pushDone := make(chan struct{})
	var batches, failures int
	go func() {
		defer close(pushDone)
		ts := time.Now().UnixMilli()
		for b := 0; ; b++ {
			select {
			case <-stop:
				return
			default:
			}
			ts += 7 // strictly increasing, independent of the clock
			series := make([]prompb.TimeSeries, nSeries)
			batch := map[key]float64{}
			for i := range series {
				v := float64(b)*1000 + float64(i) + 0.25
				series[i] = prompb.TimeSeries{
					Labels:  lbls("__name__", metric, "job", "crash", "series", strconv.Itoa(i)),
					Samples: []prompb.Sample{{Timestamp: ts, Value: v}},
				}
				batch[key{i, ts}] = v
			}
			mtx.Lock()
			for k, v := range batch {
				sent[k] = v
			}
			mtx.Unlock()
			res, err := RemoteWrite(ctx, client, writeURL, series)
			mtx.Lock()
			if err == nil && res.Status/100 == 2 {
				batches++
				for k, v := range batch {
					acked[k] = v
				}
			} else {
				failures++
			}
			mtx.Unlock()
			if err != nil {
				// The collector is gone: stop at the first refusal.
				return
			}
		}
	}()

	// Let it stream, then kill -9 mid-stream.
	Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		mtx.Lock()
		defer mtx.Unlock()
		if batches < 300 {
			return fmt.Errorf("%d batches acknowledged", batches)
		}
		return nil
	})
	col.Kill()
	select {
	case <-pushDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer did not notice the collector died")
	}
	close(stop)
	mtx.Lock()
	t.Logf("killed the collector (SIGKILL) after %d acknowledged batches (%d samples), %d refused/failed", batches, len(acked), failures)
	mtx.Unlock()

	// Restart on the same data directory.
	col2 := StartCollector(t, cfg, CollectorOptions{DataDir: dataDir})
	var minT, maxT int64 = 1<<63 - 1, 0
	for k := range sent {
		minT, maxT = min(minT, k.t), max(maxT, k.t)
	}
	// Raw samples of each series over the whole stream.
	at := time.UnixMilli(maxT + 1)
	window := time.Duration(maxT-minT+1000) * time.Millisecond
	r, err := col2.API.Query(ctx, fmt.Sprintf(`%s{job="crash"}[%dms]`, metric, window.Milliseconds()), at)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "success" {
		t.Fatalf("query after restart: %s", r.Body)
	}
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatal(err)
	}
	stored := map[key]float64{}
	for _, s := range d.Result {
		if s.Metric["cluster"] != cluster {
			t.Errorf("series %v after restart lacks cluster=%q", s.Metric, cluster)
		}
		i, err := strconv.Atoi(s.Metric["series"])
		if err != nil {
			t.Fatalf("unexpected series %v", s.Metric)
		}
		for _, p := range s.Values {
			tsec, _ := p[0].(float64)
			vs, _ := p[1].(string)
			v, err := strconv.ParseFloat(vs, 64)
			if err != nil {
				t.Fatalf("value %v: %v", p, err)
			}
			// The API gives seconds with millisecond precision.
			stored[key{i, int64(tsec*1000 + 0.5)}] = v
		}
	}
	lost, wrong := 0, 0
	for k, v := range acked {
		got, ok := stored[k]
		switch {
		case !ok:
			if lost < 5 {
				t.Errorf("acknowledged sample series=%d t=%d value=%v is missing after the restart", k.series, k.t, v)
			}
			lost++
		case got != v:
			if wrong < 5 {
				t.Errorf("acknowledged sample series=%d t=%d: value %v after the restart, want %v", k.series, k.t, got, v)
			}
			wrong++
		}
	}
	for k, v := range stored {
		if sv, ok := sent[k]; !ok || sv != v {
			t.Errorf("stored sample series=%d t=%d value=%v was never sent", k.series, k.t, v)
			break
		}
	}
	t.Logf("after restart: %d samples stored, %d acknowledged, %d acknowledged lost, %d wrong", len(stored), len(acked), lost, wrong)

	// count_over_time agrees, per series.
	v, err := col2.API.Vector(ctx, fmt.Sprintf(`count_over_time(%s{job="crash"}[%dms])`, metric, window.Milliseconds()), at)
	if err != nil {
		t.Fatal(err)
	}
	perSeriesAcked := map[string]int{}
	for k := range acked {
		perSeriesAcked[strconv.Itoa(k.series)]++
	}
	if len(v) != nSeries {
		t.Errorf("count_over_time after restart: %d series, want %d", len(v), nSeries)
	}
	for _, s := range v {
		if n := int(s.Float()); n < perSeriesAcked[s.Metric["series"]] {
			t.Errorf("count_over_time for series %s: %d, want ≥ %d acknowledged", s.Metric["series"], n, perSeriesAcked[s.Metric["series"]])
		}
	}
}

// TestCollectorGracefulShutdown stops a collector with SIGTERM while its
// remote-write queue still holds samples (the receiver answers 503), so
// that shutdown lasts until --storage.remote.flush-deadline. Meanwhile, as
// Prometheus does, /-/ready must turn 503 and the API must not answer from
// a closed TSDB; the process must exit 0 and keep every acknowledged
// sample across the restart.
func TestCollectorGracefulShutdown(t *testing.T) {
	t.Parallel()
	var sinkRequests atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sinkRequests.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	t.Cleanup(sink.Close) // after the collectors' cleanups

	const flushDeadline = 6 * time.Second
	cfg := `
global:
  scrape_interval: 1s
  external_labels:
    cluster: graceful
scrape_configs:
  - job_name: panorama
    static_configs:
      - targets: ["{{WEB}}"]
remote_write:
  - url: ` + sink.URL + `/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 500ms
`
	col := StartCollector(t, cfg, CollectorOptions{Args: []string{"--storage.remote.flush-deadline=" + flushDeadline.String()}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Acknowledged samples to find again after the restart.
	base := time.Now().Add(-time.Minute).UnixMilli()
	s := prompb.TimeSeries{Labels: lbls("__name__", "graceful_value", "job", "e2e")}
	for i := 0; i < 50; i++ {
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: base + int64(i)*1000, Value: float64(i) / 3})
	}
	if res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", []prompb.TimeSeries{s}); err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}
	// The queue is retrying against the sink: shutdown will wait for it.
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		if n := sinkRequests.Load(); n < 2 {
			return fmt.Errorf("%d remote-write attempts at the sink", n)
		}
		return nil
	})

	sigterm := time.Now()
	if err := col.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var readyAfterStop []string
	queryErrors := map[string]int{}
	for {
		if done, _ := col.Exited(); done {
			break
		}
		if time.Since(sigterm) > flushDeadline+15*time.Second {
			t.Fatalf("collector still running %s after SIGTERM", time.Since(sigterm).Round(time.Millisecond))
		}
		if resp, err := client.Get(col.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && time.Since(sigterm) > 500*time.Millisecond {
				readyAfterStop = append(readyAfterStop, time.Since(sigterm).Round(time.Millisecond).String())
			}
		}
		if r, err := col.API.Query(ctx, `count_over_time(graceful_value[5m])`, time.Time{}); err == nil {
			if r.HTTPStatus != http.StatusOK && r.HTTPStatus != http.StatusServiceUnavailable {
				queryErrors[fmt.Sprintf("HTTP %d %s", r.HTTPStatus, r.Error)]++
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(sigterm)
	code, _ := col.Wait(time.Second)
	t.Logf("collector exited %d, %s after SIGTERM (flush deadline %s)", code, took.Round(time.Millisecond), flushDeadline)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if took > flushDeadline+10*time.Second {
		t.Errorf("shutdown took %s, want about the flush deadline %s", took, flushDeadline)
	}
	if len(readyAfterStop) > 0 {
		t.Errorf("/-/ready still answered 200 %d times while stopping (at %v after SIGTERM); Prometheus answers 503 once it is stopping",
			len(readyAfterStop), readyAfterStop[:min(5, len(readyAfterStop))])
	}
	for e, n := range queryErrors {
		t.Errorf("a query during shutdown got %s (%d times); want a 503 while stopping", e, n)
	}

	col2 := StartCollector(t, cfg[:strings.Index(cfg, "remote_write:")], CollectorOptions{DataDir: col.DataDir})
	v, err := col2.API.Vector(ctx, `count_over_time(graceful_value[5m])`, time.UnixMilli(base+49*1000))
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || v[0].V != "50" {
		t.Errorf("after a graceful restart: count_over_time(graceful_value[5m]) = %v, want 50", v)
	}
}
