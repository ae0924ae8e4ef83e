package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestCollectorRemoteWritesToCollector points collector A's remote_write
// at collector B: what A scrapes becomes queryable at B, carrying A's
// cluster label (remote write attaches external labels), with A's exact
// samples.
func TestCollectorRemoteWritesToCollector(t *testing.T) {
	t.Parallel()
	b := StartCollector(t, `
global:
  external_labels:
    cluster: b
scrape_configs: []
`, CollectorOptions{})
	a := StartCollector(t, `
global:
  scrape_interval: 1s
  external_labels:
    cluster: a
scrape_configs:
  - job_name: panorama-a
    static_configs:
      - targets: ["{{WEB}}"]
remote_write:
  - url: http://`+b.Addr+`/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
`, CollectorOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A's series arrive at B with A's cluster.
	Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
		v, err := b.API.Vector(ctx, `count_over_time(up{job="panorama-a"}[1m])`, time.Time{})
		if err != nil {
			return err
		}
		if len(v) != 1 || v[0].Float() < 3 {
			return fmt.Errorf("up{job=\"panorama-a\"} at B: %v", v)
		}
		if v[0].Metric["cluster"] != "a" || v[0].Metric["instance"] != a.Addr {
			return fmt.Errorf("up{job=\"panorama-a\"} at B: labels %v, want cluster=a instance=%s", v[0].Metric, a.Addr)
		}
		return nil
	})

	// Every series of A's job at B is labelled cluster=a, none cluster=b.
	v, err := b.API.Vector(ctx, `count by (cluster) ({job="panorama-a"})`, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || v[0].Metric["cluster"] != "a" {
		t.Errorf("count by (cluster) at B: %v, want only cluster=a", v)
	}
	for q, wantEmpty := range map[string]bool{
		`up{cluster="a"}`:                      false,
		`up{cluster="b"}`:                      true,
		`up{cluster=~"a|b", job="panorama-a"}`: false,
	} {
		v, err := b.API.Vector(ctx, q, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if (len(v) == 0) != wantEmpty {
			t.Errorf("%s at B: %v (want empty: %v)", q, v, wantEmpty)
		}
	}
	r, err := b.API.Do(ctx, false, "label/cluster/values", nil)
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	if err := json.Unmarshal(r.Data, &values); err != nil || strings.Join(values, ",") != "a" {
		t.Errorf("/api/v1/label/cluster/values at B: %s, want [\"a\"]", r.Body)
	}

	// B holds exactly A's samples: the raw samples of a window that B
	// has fully received compare equal, cluster label included.
	for _, sel := range []string{`up{job="panorama-a"}[20s]`, `panorama_build_info{job="panorama-a"}[20s]`, `scrape_samples_scraped{job="panorama-a"}[20s]`} {
		Eventually(t, 30*time.Second, 500*time.Millisecond, func() error {
			// A moment B has surely received, once A has scraped for a
			// while: remote write can be faster than A's first scrapes.
			ts := time.Now().Add(-3 * time.Second)
			want, err := a.API.Query(ctx, sel, ts)
			if err != nil {
				return err
			}
			got, err := b.API.Query(ctx, sel, ts)
			if err != nil {
				return err
			}
			if want.Status != "success" || len(want.Data) < 60 {
				return fmt.Errorf("%s at A: %s", sel, want.Body)
			}
			// Drop nothing: both must say cluster="a".
			if diff, _ := resultDiff(got, want, "", false); diff != "" {
				return fmt.Errorf("%s at B differs from A:\n%s", sel, diff)
			}
			return nil
		})
	}

	// B's /federate passes A's cluster on.
	resp, err := b.API.Client.Get(b.URL + "/federate?" + url.Values{"match[]": {`up{job="panorama-a"}`}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := readAll(t, resp)
	if want := `up{cluster="a",instance="` + a.Addr + `",job="panorama-a"} 1`; !strings.Contains(body, want) {
		t.Errorf("B's /federate:\n%s\nlacks %q", body, want)
	}
}

// TestCollectorRemoteWriteLatency pushes one sample into a collector and,
// at the same moment, into the reference Prometheus 3.9.1; both forward
// it with the same remote_write settings to a receiving collector. The
// collector must forward about as fast as Prometheus does (which reads
// its WAL as soon as it is written, not on the watcher's 15 s poll).
func TestCollectorRemoteWriteLatency(t *testing.T) {
	t.Parallel()
	recv := StartCollector(t, `
global:
  external_labels:
    cluster: receiver
scrape_configs: []
`, CollectorOptions{})
	sender := func(cluster string) string {
		return `
global:
  external_labels:
    cluster: ` + cluster + `
scrape_configs: []
remote_write:
  - url: http://` + recv.Addr + `/api/v1/write
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 500ms
`
	}
	ref := StartReferencePrometheus(t, sender("ref"))
	col := StartCollector(t, sender("col"), CollectorOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Push into both at once, then time each sample's arrival.
	pushed := time.Now()
	sample := []prompb.TimeSeries{{Labels: lbls("__name__", "latency_probe", "job", "e2e"), Samples: []prompb.Sample{{Timestamp: pushed.UnixMilli(), Value: 42}}}}
	for _, u := range []string{ref.URL, col.URL} {
		if res, err := RemoteWrite(ctx, http.DefaultClient, u+"/api/v1/write", sample); err != nil || res.Status/100 != 2 {
			t.Fatalf("remote write to %s: %v %+v", u, err, res)
		}
	}
	arrived := map[string]time.Duration{}
	deadline := pushed.Add(40 * time.Second)
	for len(arrived) < 2 && time.Now().Before(deadline) {
		v, err := recv.API.Vector(ctx, `latency_probe`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range v {
			if _, ok := arrived[s.Metric["cluster"]]; !ok {
				arrived[s.Metric["cluster"]] = time.Since(pushed)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("forwarded to the receiver after: reference Prometheus %v, collector %v", arrived["ref"], arrived["col"])
	refLatency, ok := arrived["ref"]
	if !ok {
		t.Fatal("the reference Prometheus did not forward the sample within 40 s")
	}
	colLatency, ok := arrived["col"]
	if !ok {
		t.Fatalf("the collector did not forward the sample within 40 s (the reference did in %v)", refLatency)
	}
	if colLatency > refLatency+5*time.Second {
		t.Errorf("the collector forwarded the sample after %v, the reference Prometheus after %v", colLatency.Round(time.Millisecond), refLatency.Round(time.Millisecond))
	}
}
