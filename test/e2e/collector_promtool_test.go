package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestCollectorWithPromtool queries the collector with the reference
// promtool, as an operator would from a shell.
func TestCollectorWithPromtool(t *testing.T) {
	t.Parallel()
	promtool := RequireBinary(t, RefPromtoolPath)
	const cluster = "promtool-test"
	col := StartCollector(t, `
global:
  scrape_interval: 1s
  external_labels:
    cluster: `+cluster+`
scrape_configs:
  - job_name: panorama
    static_configs:
      - targets: ["{{WEB}}"]
`, CollectorOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Known samples for the range query: one every 10 s.
	base := time.Now().Truncate(10 * time.Second).Add(-2 * time.Minute)
	series := prompb.TimeSeries{Labels: lbls("__name__", "promtool_demo", "job", "e2e", "instance", "demo:1")}
	for i := 0; i < 10; i++ {
		series.Samples = append(series.Samples, prompb.Sample{Timestamp: base.Add(time.Duration(i) * 10 * time.Second).UnixMilli(), Value: float64(i*i) + 0.5})
	}
	res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", []prompb.TimeSeries{series})
	if err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}

	// The self-scrape must have happened once.
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := col.API.Vector(ctx, `up{job="panorama"}`, time.Time{})
		if err != nil {
			return err
		}
		if len(v) == 0 {
			return fmt.Errorf("no up series yet")
		}
		return nil
	})

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, promtool, args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}

	out := run("query", "instant", col.URL, "up")
	wantUp := fmt.Sprintf(`up{cluster="%s", instance="%s", job="panorama"} => 1 @[`, cluster, col.Addr)
	if !strings.Contains(out, wantUp) {
		t.Errorf("promtool query instant: output lacks %q", wantUp)
	}

	start, end := base.Add(5*time.Second), base.Add(95*time.Second)
	out = run("query", "range",
		"--start="+start.UTC().Format(time.RFC3339),
		"--end="+end.UTC().Format(time.RFC3339),
		"--step=30s",
		col.URL, `promtool_demo`)
	header := fmt.Sprintf(`promtool_demo{cluster="%s", instance="demo:1", job="e2e"} =>`, cluster)
	if !strings.Contains(out, header) {
		t.Errorf("promtool query range: output lacks %q", header)
	}
	// At start+k*30s the newest sample is the one 5 s before.
	for k := 0; k < 4; k++ {
		ts := start.Add(time.Duration(k) * 30 * time.Second)
		i := (5 + 30*k) / 10
		want := fmt.Sprintf("%s @[%d]", strconv.FormatFloat(float64(i*i)+0.5, 'f', -1, 64), ts.Unix())
		if !strings.Contains(out, want) {
			t.Errorf("promtool query range: output lacks %q", want)
		}
	}

	// A query error makes promtool fail, naming it.
	cmd := exec.CommandContext(ctx, promtool, "query", "instant", col.URL, "sum(")
	bad, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("promtool query instant 'sum(' exited 0:\n%s", bad)
	} else if !strings.Contains(string(bad), "bad_data") && !strings.Contains(string(bad), "parse error") {
		t.Errorf("promtool query instant 'sum(': output does not name the error:\n%s", bad)
	}
}
