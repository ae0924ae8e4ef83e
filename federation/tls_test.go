package federation

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/panorama-obs/panorama/collector"
	"github.com/panorama-obs/panorama/internal/grpctls"
	"github.com/panorama-obs/panorama/internal/testenv"
)

// TestTLSBetweenLevels runs two collectors that serve their StoreAPI over
// TLS and require client certificates of the test's CA, a region
// federator that is their client over mutual TLS and serves its own
// StoreAPI the same way, and a global federator over it: answers equal the
// reference and aggregations are pushed down at both levels, all over TLS.
// Federators without a client certificate, without TLS, or trusting
// another CA get the endpoints marked unhealthy and a warning, never data.
func TestTLSBetweenLevels(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two collectors and five federators")
	}
	ca := testenv.NewCA(t)
	serverCert, serverKey := ca.Server(t, "leaf")
	mtls := grpctls.ServerConfig{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: ca.CertFile}
	clientCert, clientKey := ca.Client(t, "federator")
	client := grpctls.ClientConfig{Secure: true, CertFile: clientCert, KeyFile: clientKey, CAFile: ca.CertFile}

	data := map[string][]testSeries{}
	var addrs []string
	for i, cluster := range []string{"east", "west"} {
		w := workload(float64(i + 1))
		rc := startCollector(t, cluster, func(o *collector.Options) { o.GRPCServerTLS = mtls })
		rc.write(t, w)
		data["cluster="+cluster+",region=eu"] = w
		addrs = append(addrs, rc.c.GRPCAddr())
	}
	regionOpts := testOptions(addrs...)
	regionOpts.ExternalLabels = labels.FromStrings("region", "eu")
	regionOpts.GRPCServerTLS = mtls
	regionOpts.GRPCClientTLS = client
	region := startFederator(t, regionOpts)
	globalOpts := testOptions(region.f.GRPCAddr())
	globalOpts.GRPCClientTLS = client
	global := startFederator(t, globalOpts)

	ref := newReference(t, data)
	for _, q := range []string{
		`up`,
		`sum by (cluster) (rate(http_requests_total[5m]))`,
		`histogram_quantile(0.9, sum by (le, cluster) (rate(http_request_duration_seconds_bucket[5m])))`,
		`topk(2, rate(http_requests_total[5m]))`,
	} {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			path := "/api/v1/query"
			if params.Has("step") {
				path = "/api/v1/query_range"
			}
			r := post(t, global.url, path, params)
			mustSucceed(t, "global "+q, r)
			if got, want := normalized(r.Data), normalized(ref.data(t, params)); got != want {
				t.Errorf("global %s %s:\ngot:  %s\nwant: %s", path, q, got, want)
			}
		}
	}
	for name, f := range map[string]*testFederator{"global": global, "region": region} {
		if v := testutil.ToFloat64(f.f.engine.outcomes.WithLabelValues("pushed")); v == 0 {
			t.Errorf("%s federator pushed no aggregation down over TLS", name)
		}
		if v := testutil.ToFloat64(f.f.engine.outcomes.WithLabelValues("fallback")); v != 0 {
			t.Errorf("%s federator fell back to pulling %v times", name, v)
		}
		for _, st := range f.f.Endpoints() {
			if st.LastError != nil {
				t.Errorf("%s federator: endpoint %s: %v", name, st.Name, st.LastError)
			}
		}
	}

	otherCA := testenv.NewCA(t)
	for _, tc := range []struct {
		name   string
		client grpctls.ClientConfig
	}{
		{"without a client certificate", grpctls.ClientConfig{Secure: true, CAFile: ca.CertFile}},
		{"without TLS", grpctls.ClientConfig{}},
		{"trusting another CA", grpctls.ClientConfig{Secure: true, CertFile: clientCert, KeyFile: clientKey, CAFile: otherCA.CertFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(addrs...)
			opts.GRPCClientTLS = tc.client
			f := startFederator(t, opts)
			for _, st := range f.f.Endpoints() {
				if st.LastError == nil {
					t.Errorf("endpoint %s is healthy", st.Name)
				}
			}
			r := get(t, f.url, "/api/v1/query", instant(`sum by (cluster) (rate(http_requests_total[5m]))`))
			if r.Status != "success" || len(r.result(t).Result) != 0 {
				t.Errorf("got %s %s with data %s", r.Status, r.Error, r.Data)
			}
			if len(r.Warnings) != len(addrs) {
				t.Fatalf("want a warning per endpoint, got %q", r.Warnings)
			}
			all := strings.Join(r.Warnings, "\n")
			for _, a := range addrs {
				if !strings.Contains(all, "endpoint "+a+": unreachable") {
					t.Errorf("no warning names %s as unreachable: %q", a, r.Warnings)
				}
			}
			strict := get(t, f.url, "/api/v1/query", url.Values{"query": {`up`}, "partial_response": {"false"}})
			if strict.code != http.StatusUnprocessableEntity || strict.ErrorType != "execution" {
				t.Errorf("partial_response=false: %d %s %s", strict.code, strict.ErrorType, strict.Error)
			}
			if v := testutil.ToFloat64(f.f.engine.outcomes.WithLabelValues("pushed")); v != 0 {
				t.Errorf("pushed %v aggregations to endpoints it cannot reach", v)
			}
		})
	}
}

// TestTLSBadInput: a configuration that cannot work stops the federator at
// start, naming the flag and the file.
func TestTLSBadInput(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Server(t, "leaf")
	missing := t.TempDir() + "/missing.crt"
	for _, tc := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"missing server cert", func(o *Options) {
			o.GRPCServerTLS = grpctls.ServerConfig{CertFile: missing, KeyFile: key}
		}, "--grpc-server-tls-cert=" + missing},
		{"server key without cert", func(o *Options) {
			o.GRPCServerTLS = grpctls.ServerConfig{KeyFile: key}
		}, "--grpc-server-tls-key=" + key + " is given without --grpc-server-tls-cert"},
		{"server cert as CA file that is no PEM", func(o *Options) {
			o.GRPCServerTLS = grpctls.ServerConfig{CertFile: cert, KeyFile: key, ClientCAFile: key}
		}, "--grpc-server-tls-client-ca=" + key + ": no PEM certificate"},
		{"missing client CA", func(o *Options) {
			o.GRPCClientTLS = grpctls.ClientConfig{Secure: true, CAFile: missing}
		}, "--grpc-client-tls-ca=" + missing},
		{"client key without cert", func(o *Options) {
			o.GRPCClientTLS = grpctls.ClientConfig{Secure: true, KeyFile: key}
		}, "--grpc-client-tls-key=" + key + " is given without --grpc-client-tls-cert"},
		{"client cert without secure", func(o *Options) {
			o.GRPCClientTLS = grpctls.ClientConfig{CertFile: cert, KeyFile: key}
		}, "--grpc-client-tls-cert=" + cert + " is given without --grpc-client-tls-secure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions("127.0.0.1:1")
			tc.set(&opts)
			f, err := New(testLogger(t, "federator"), nil, opts)
			if err == nil {
				f.close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}
