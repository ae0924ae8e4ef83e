package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// TestCollectorRejectsBadInput sends what a broken client would: bad
// remote-write bodies, bad PromQL, a query over --query.max-samples.
func TestCollectorRejectsBadInput(t *testing.T) {
	t.Parallel()
	col := StartCollector(t, `
global:
  external_labels:
    cluster: bad-input
scrape_configs: []
`, CollectorOptions{Args: []string{"--query.max-samples=10"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	writeURL := col.URL + "/api/v1/write"

	// Enough data for a query to exceed 10 samples.
	now := time.Now().Add(-time.Minute).UnixMilli()
	var series []prompb.TimeSeries
	for i := 0; i < 3; i++ {
		s := prompb.TimeSeries{Labels: lbls("__name__", "many_samples", "job", "e2e", "i", string(rune('a'+i)))}
		for k := 0; k < 10; k++ {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: now + int64(k)*1000, Value: float64(k)})
		}
		series = append(series, s)
	}
	if res, err := RemoteWrite(ctx, http.DefaultClient, writeURL, series); err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write of valid data: %v %+v", err, res)
	}

	// Bad bodies get 400 naming the problem, as from the reference
	// Prometheus (the same handler): compare with it.
	ref := StartReferencePrometheus(t, `
global:
  external_labels:
    cluster: bad-input
scrape_configs: []
`)
	for _, c := range []struct {
		name  string
		body  []byte
		names []string // one of these must appear in the message
	}{
		{"remote write body not snappy", []byte("this is not snappy at all, just text"), []string{"snappy", "corrupt input"}},
		{"remote write snappy of garbage protobuf", snappy.Encode(nil, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02, 0xfe, 0xfd}), []string{"proto", "unexpected eof", "illegal"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := PostRemoteWrite(ctx, nil, writeURL, c.body)
			if err != nil {
				t.Fatal(err)
			}
			named := false
			for _, n := range c.names {
				named = named || strings.Contains(strings.ToLower(res.Body), n)
			}
			if res.Status != http.StatusBadRequest || !named {
				t.Errorf("HTTP %d %q, want 400 naming one of %q", res.Status, res.Body, c.names)
			}
			refRes, err := PostRemoteWrite(ctx, nil, ref.URL+"/api/v1/write", c.body)
			if err != nil {
				t.Fatal(err)
			}
			if refRes != res {
				t.Errorf("collector answers HTTP %d %q, the reference Prometheus HTTP %d %q", res.Status, res.Body, refRes.Status, refRes.Body)
			}
		})
	}
	t.Run("remote write out of order", func(t *testing.T) {
		old := []prompb.TimeSeries{{Labels: series[0].Labels, Samples: []prompb.Sample{{Timestamp: now + 500, Value: 1}}}}
		res, err := RemoteWrite(ctx, http.DefaultClient, writeURL, old)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != http.StatusBadRequest || !strings.Contains(res.Body, "out of order") {
			t.Errorf("HTTP %d %q, want 400 naming the out-of-order sample", res.Status, res.Body)
		}
	})
	t.Run("invalid PromQL", func(t *testing.T) {
		for _, q := range []string{`sum(`, `rate(up)`, `up{job=~"("}`} {
			r, err := col.API.Query(ctx, q, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if r.HTTPStatus != http.StatusBadRequest || r.ErrorType != "bad_data" || r.Error == "" {
				t.Errorf("%s: HTTP %d %s %q, want 400 bad_data", q, r.HTTPStatus, r.ErrorType, r.Error)
			}
		}
	})
	t.Run("query over --query.max-samples", func(t *testing.T) {
		r, err := col.API.Query(ctx, `many_samples[5m]`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		const msg = "query processing would load too many samples into memory in query execution"
		if r.Status != "error" || r.ErrorType != "execution" || r.Error != msg {
			t.Errorf("HTTP %d %s %q, want errorType execution %q", r.HTTPStatus, r.ErrorType, r.Error, msg)
		}
		// A small query still answers.
		v, err := col.API.Vector(ctx, `many_samples{i="a"}`, time.Time{})
		if err != nil || len(v) != 1 {
			t.Errorf("small query: %v %v", v, err)
		}
	})
}

// TestCollectorRejectsBadConfig starts `panorama collector` on broken
// configuration files: it must exit non-zero, naming the file and the line.
func TestCollectorRejectsBadConfig(t *testing.T) {
	t.Parallel()
	bin := PanoramaBinary(t)
	cases := []struct {
		name, config string
		want         []string
	}{
		{
			name: "type error on line 5",
			config: `global:
  external_labels:
    cluster: c
scrape_configs:
  - job_name: [not, a, string]
`,
			want: []string{"line 5", "cannot unmarshal"},
		},
		{
			name: "bad duration on line 3",
			config: `global:
  scrape_interval: 15s
  scrape_timeout: soon
  external_labels:
    cluster: c
`,
			want: []string{"line 3", "soon"},
		},
		{
			name: "missing cluster external label",
			config: `# a collector without its cluster

global:
  scrape_interval: 15s
  external_labels:
    region: eu
scrape_configs: []
`,
			want: []string{"line 3", "cluster"},
		},
		{
			name: "duplicate job name on line 8",
			config: `global:
  external_labels:
    cluster: c
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["node-1:9100"]
  - job_name: node
    static_configs:
      - targets: ["node-2:9100"]
`,
			want: []string{"line 8", "node"},
		},
		{
			name: "invalid relabel regex on line 8",
			config: `global:
  external_labels:
    cluster: c
scrape_configs:
  - job_name: api
    relabel_configs:
      - source_labels: [__address__]
        regex: "(api|web"
        target_label: service
`,
			want: []string{"line 8", "regexp"},
		},
		{
			name: "YAML syntax error on line 4",
			config: `global:
  external_labels:
    cluster: c
scrape_configs: [
`,
			want: []string{"line 4"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "broken.yml")
			if err := os.WriteFile(file, []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "collector",
				"--config.file="+file,
				"--web.listen-address=127.0.0.1:0",
				"--grpc-address=127.0.0.1:0",
				"--storage.tsdb.path="+filepath.Join(dir, "data"))
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("panorama collector did not exit on a broken configuration:\n%s", out)
			}
			if err == nil {
				t.Fatalf("panorama collector exited 0 on a broken configuration:\n%s", out)
			}
			for _, w := range append([]string{file}, c.want...) {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not name %q:\n%s", w, out)
				}
			}
		})
	}
}

// A browser's request carries an Origin header; the API answers it with
// Prometheus' CORS headers (it once dropped the connection instead).
func TestCollectorAnswersCORS(t *testing.T) {
	t.Parallel()
	col := StartCollector(t, "global:\n  external_labels: {cluster: c}\nscrape_configs: []\n", CollectorOptions{})
	req, err := http.NewRequest(http.MethodGet, col.URL+"/api/v1/query?query=1%2B1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "http://grafana.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Fatalf("status %d, Access-Control-Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}
