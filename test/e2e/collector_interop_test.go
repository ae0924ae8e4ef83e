package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// debianPrometheusVersion is what `prometheus --version` reports, the
// value of prometheus_build_info's version label (e.g. 2.42.0+ds).
func debianPrometheusVersion(t testing.TB, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	m := regexp.MustCompile(`version (\S+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("%s --version: no version in %q", bin, out)
	}
	return m[1]
}

// TestCollectorWithPrometheus242 runs Debian's Prometheus 2.42 next to a
// collector both ways: 2.42 remote-writes what it scrapes into the
// collector, and scrapes the collector's /federate.
func TestCollectorWithPrometheus242(t *testing.T) {
	t.Parallel()
	bin := RequireBinary(t, DebianPrometheusPath)
	version := debianPrometheusVersion(t, bin)
	const cluster = "east"
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
	prom := StartDebianPrometheus(t, `
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prom242
    static_configs:
      - targets: ["{{WEB}}"]
  - job_name: federate
    honor_labels: true
    metrics_path: /federate
    params:
      "match[]": ['{job="panorama"}']
    static_configs:
      - targets: ["`+col.Addr+`"]
remote_write:
  - url: http://`+col.Addr+`/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    # Only 2.42's own series: the federated ones came from the collector.
    write_relabel_configs:
      - source_labels: [job]
        regex: prom242
        action: keep
`)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("remote write from 2.42 into the collector", func(t *testing.T) {
		q := fmt.Sprintf(`prometheus_build_info{job="prom242", version=%q}`, version)
		var got []Sample
		Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
			var err error
			got, err = col.API.Vector(ctx, q, time.Time{})
			if err != nil {
				return err
			}
			if len(got) != 1 {
				return fmt.Errorf("%s at the collector: %v", q, got)
			}
			return nil
		})
		m := got[0].Metric
		if m["cluster"] != cluster || m["instance"] != prom.Addr || got[0].V != "1" {
			t.Errorf("%s at the collector: %v = %s, want cluster=%q instance=%q value 1", q, m, got[0].V, cluster, prom.Addr)
		}
		// Samples keep arriving: several per series after a few seconds.
		Eventually(t, 30*time.Second, 500*time.Millisecond, func() error {
			v, err := col.API.Vector(ctx, `count_over_time(up{job="prom242"}[1m])`, time.Time{})
			if err != nil {
				return err
			}
			if len(v) != 1 || v[0].Float() < 3 {
				return fmt.Errorf("count_over_time(up{job=\"prom242\"}[1m]) at the collector: %v", v)
			}
			return nil
		})
		// Nothing but 2.42's own job arrived, and all of it as written.
		v, err := col.API.Vector(ctx, `count by (job) ({job=~"prom242|federate"})`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 1 || v[0].Metric["job"] != "prom242" {
			t.Errorf("jobs written by 2.42: %v, want only prom242", v)
		}
	})

	t.Run("2.42 federates the collector", func(t *testing.T) {
		var got []Sample
		Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
			var err error
			got, err = prom.API.Vector(ctx, `panorama_build_info{job="panorama"}`, time.Time{})
			if err != nil {
				return err
			}
			if len(got) != 1 {
				return fmt.Errorf("panorama_build_info at 2.42: %v", got)
			}
			return nil
		})
		m := got[0].Metric
		if m["cluster"] != cluster || m["instance"] != col.Addr || m["component"] != "collector" {
			t.Errorf("federated panorama_build_info at 2.42: %v, want cluster=%q instance=%q component=collector", m, cluster, col.Addr)
		}
		v, err := prom.API.Vector(ctx, `up{job="federate"}`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 1 || v[0].V != "1" {
			t.Errorf("up{job=\"federate\"} at 2.42: %v, want 1", v)
		}
		// Every federated series carries the cluster, none came with 2.42's
		// own job, and 2.42 got (about) all of the collector's series.
		v, err = prom.API.Vector(ctx, `count({job="panorama", cluster!="`+cluster+`"}) or vector(0)`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 1 || v[0].V != "0" {
			t.Errorf("federated series without cluster=%q at 2.42: %v", cluster, v)
		}
		Eventually(t, 30*time.Second, time.Second, func() error {
			fed, err := prom.API.Vector(ctx, `count({job="panorama"})`, time.Time{})
			if err != nil {
				return err
			}
			own, err := col.API.Vector(ctx, `count({job="panorama"})`, time.Time{})
			if err != nil {
				return err
			}
			if len(fed) != 1 || len(own) != 1 {
				return fmt.Errorf("counts: federated %v, collector %v", fed, own)
			}
			if fed[0].V != own[0].V {
				return fmt.Errorf("2.42 holds %s federated series of job panorama, the collector %s", fed[0].V, own[0].V)
			}
			return nil
		})
	})

	t.Run("federate text format", func(t *testing.T) {
		resp, err := http.Get(col.URL + `/federate?match[]=` + `{__name__="up",job="panorama"}`)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body := readAll(t, resp)
		want := fmt.Sprintf(`up{cluster="%s",instance="%s",job="panorama"} 1 `, cluster, col.Addr)
		if resp.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("/federate: HTTP %d\n%s\nwant a line starting %q", resp.StatusCode, body, want)
		}
	})
}
