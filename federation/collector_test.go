package federation

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/panorama-obs/panorama/collector"
)

// realCollector is a Panorama collector started in-process as
// `panorama collector` starts it, on loopback ports, loaded through its own
// remote-write receiver.
type realCollector struct {
	c   *collector.Collector
	url string
}

func startCollector(t *testing.T, cluster string, with ...func(*collector.Options)) *realCollector {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "collector.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  external_labels:\n    cluster: "+cluster+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := collector.Options{
		ConfigFile:          cfg,
		ListenAddress:       "127.0.0.1:0",
		TSDBPath:            filepath.Join(dir, "data"),
		Retention:           model.Duration(24 * time.Hour),
		GRPCAddress:         "127.0.0.1:0",
		QueryMaxSamples:     50000000,
		QueryTimeout:        time.Minute,
		QueryMaxConcurrency: 4,
		LookbackDelta:       5 * time.Minute,
		RemoteWriteReceiver: true,
		RemoteFlushDeadline: time.Second,
	}
	for _, f := range with {
		f(&opts)
	}
	c, err := collector.New(testLogger(t, "collector "+cluster), reg, reg, opts)
	if err != nil {
		t.Fatalf("collector.New: %v", err)
	}
	url := serveRole(t, "collector "+cluster, 30*time.Second, c.Mount, c.Register)
	<-c.Ready()
	return &realCollector{c: c, url: url}
}

// write sends series through the collector's /api/v1/write, as a
// Prometheus remote-writing to it would.
func (rc *realCollector) write(t *testing.T, data []testSeries) {
	t.Helper()
	var series []prompb.TimeSeries
	for _, s := range data {
		var ts prompb.TimeSeries
		s.lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
		for _, smp := range s.samples {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: smp.t, Value: smp.v})
		}
		series = append(series, ts)
	}
	rc.writeSeries(t, series)
}

// writeSeries sends series through the collector's /api/v1/write.
func (rc *realCollector) writeSeries(t *testing.T, series []prompb.TimeSeries) {
	t.Helper()
	req := prompb.WriteRequest{Timeseries: series}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hreq, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, rc.url+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("remote write to %s: %d", rc.url, resp.StatusCode)
	}
}

// TestRealCollectorsThreeLevels runs the cascade on real
// collectors: two collectors under each of two region federators, both
// under a global federator; every level answers the query suite as one
// Prometheus holding its part of the data, and a collector's own API agrees
// with the federators on its cluster.
func TestRealCollectorsThreeLevels(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four collectors and three federators")
	}
	data := map[string][]testSeries{}
	var eu, us []string
	byRegion := map[string]map[string][]testSeries{"eu": {}, "us": {}}
	var first *realCollector
	for i, c := range []struct{ cluster, region string }{{"paris", "eu"}, {"berlin", "eu"}, {"ohio", "us"}, {"oregon", "us"}} {
		w := workload(float64(i + 1))
		rc := startCollector(t, c.cluster)
		rc.write(t, w)
		if first == nil {
			first = rc
		}
		key := fmt.Sprintf("cluster=%s,region=%s", c.cluster, c.region)
		data[key] = w
		byRegion[c.region][key] = w
		if c.region == "eu" {
			eu = append(eu, rc.c.GRPCAddr())
		} else {
			us = append(us, rc.c.GRPCAddr())
		}
	}
	euOpts := testOptions(eu...)
	euOpts.ExternalLabels = labels.FromStrings("region", "eu")
	usOpts := testOptions(us...)
	usOpts.ExternalLabels = labels.FromStrings("region", "us")
	euFed, usFed := startFederator(t, euOpts), startFederator(t, usOpts)
	global := startFederator(t, testOptions(euFed.f.GRPCAddr(), usFed.f.GRPCAddr()))

	levels := []struct {
		name string
		url  string
		ref  *reference
	}{
		{"global", global.url, newReference(t, data)},
		{"eu", euFed.url, newReference(t, byRegion["eu"])},
		{"us", usFed.url, newReference(t, byRegion["us"])},
	}
	queries := append(slices.Clone(suite),
		`sum by (region) (rate(http_requests_total[5m]))`,
		`topk(1, sum by (region, cluster) (rate(http_requests_total[5m])))`,
		`count by (region) ({__name__=~"up|http_requests_total"})`,
	)
	for _, q := range queries {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			path := "/api/v1/query"
			if params.Has("step") {
				path = "/api/v1/query_range"
			}
			for _, l := range levels {
				r := post(t, l.url, path, params)
				mustSucceed(t, l.name+" "+q, r)
				if got, want := normalized(r.Data), normalized(l.ref.data(t, params)); got != want {
					t.Errorf("%s %s %s:\ngot:  %s\nwant: %s", l.name, path, q, got, want)
				}
			}
		}
	}

	// Both levels evaluated aggregations at the level below: the global
	// federator at the regions, the regions at the collectors.
	for name, f := range map[string]*testFederator{"global": global, "eu": euFed, "us": usFed} {
		if v := testutil.ToFloat64(f.f.engine.outcomes.WithLabelValues("pushed")); v == 0 {
			t.Errorf("%s federator pushed no aggregation down", name)
		}
	}

	// The collector's own API and the global federator agree on its
	// cluster, but for the region label the federator adds.
	q := `sum by (cluster, code) (rate(http_requests_total{cluster="paris"}[5m]))`
	own := get(t, first.url, "/api/v1/query", instant(q))
	top := get(t, global.url, "/api/v1/query", instant(`sum by (cluster, code) (rate(http_requests_total{cluster="paris",region="eu"}[5m]))`))
	mustSucceed(t, "collector", own)
	mustSucceed(t, "global", top)
	if normalized(own.Data) != normalized(top.Data) {
		t.Errorf("collector and global disagree on paris:\ncollector: %s\nglobal:    %s", own.Data, top.Data)
	}
	if got := top.result(t).metrics(); len(got) != 2 || !strings.Contains(got[0], "paris") {
		t.Errorf("paris by code: %q", got)
	}
}
