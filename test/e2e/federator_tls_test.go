package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// TestTLSWithThanosQuerier runs the binaries over mutual TLS, every gRPC
// connection verified against a CA made up for the test: a collector
// serving its StoreAPI with --grpc-server-tls-* and a client CA, a
// federator over it with --grpc-client-tls-* (and serving TLS itself), and
// the real Thanos Querier over the collector and over the federator with
// its own --grpc-client-tls-* flags. All answer the same; a Querier
// without a client certificate gets nothing.
func TestTLSWithThanosQuerier(t *testing.T) {
	t.Parallel()
	RequireBinary(t, ThanosPath)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ca := testenv.NewCA(t)
	serverCert, serverKey := ca.Server(t, "server")
	clientCert, clientKey := ca.Client(t, "client")
	serverTLS := []string{"--grpc-server-tls-cert=" + serverCert, "--grpc-server-tls-key=" + serverKey, "--grpc-server-tls-client-ca=" + ca.CertFile}
	clientTLS := []string{"--grpc-client-tls-secure", "--grpc-client-tls-ca=" + ca.CertFile, "--grpc-client-tls-cert=" + clientCert, "--grpc-client-tls-key=" + clientKey}

	col := StartCollector(t, "global:\n  external_labels:\n    cluster: east\n", CollectorOptions{Args: serverTLS})
	now := time.Now().Add(-30 * time.Second).UnixMilli()
	var series []prompb.TimeSeries
	for i, inst := range []string{"a", "b", "c"} {
		s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "tls_requests_total"}, {Name: "instance", Value: inst}, {Name: "job", Value: "e2e"}}}
		for j := 0; j < 20; j++ {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: now - int64(19-j)*1000, Value: float64((i + 1) * j)})
		}
		series = append(series, s)
	}
	if res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", series); err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}

	fed := StartFederator(t, append(append([]string{"--endpoint=" + col.GRPCAddr}, serverTLS...), clientTLS...)...)
	tqCol := StartThanosQuery(t, append([]string{"--endpoint=" + col.GRPCAddr}, clientTLS...)...)
	tqFed := StartThanosQuery(t, append([]string{"--endpoint=" + fed.GRPCAddr}, clientTLS...)...)
	// The Querier verifies the certificate but has none to show: the
	// collector refuses it.
	tqNoCert := StartThanosQuery(t, "--endpoint="+col.GRPCAddr, "--grpc-client-tls-secure", "--grpc-client-tls-ca="+ca.CertFile)

	const q = `sum by (cluster) (tls_requests_total)`
	at := time.UnixMilli(now)
	want := `[{"cluster":"east"} 114]`
	for name, api := range map[string]*API{"collector": col.API, "federator": fed.API, "thanos query over the collector": tqCol.API, "thanos query over the federator": tqFed.API} {
		Eventually(t, 60*time.Second, 250*time.Millisecond, func() error {
			v, err := api.Vector(ctx, q, at)
			if err != nil {
				return err
			}
			if got := formatVector(v); got != want {
				return fmt.Errorf("%s: %s = %s, want %s", name, q, got, want)
			}
			return nil
		})
	}
	if pushed := metricValue(t, ctx, fed.URL, `panorama_federator_pushdown_aggregations_total{outcome="pushed"}`); pushed == 0 {
		t.Error("the federator pushed nothing down to the collector over TLS")
	}

	// The Querier without a certificate is refused by the collector
	// (Thanos drops an endpoint that never answered, so /api/v1/stores
	// does not show it: its log does) and answers without data.
	Eventually(t, 30*time.Second, 250*time.Millisecond, func() error {
		if !strings.Contains(tqNoCert.Logs(), "tls: certificate required") {
			return fmt.Errorf("thanos query without a client certificate has not been refused yet")
		}
		return nil
	})
	r, err := tqNoCert.API.Query(ctx, q, at)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "success" || strings.Contains(string(r.Data), "east") {
		t.Errorf("thanos query without a client certificate: %s %s %s", r.Status, r.Error, r.Data)
	}
}

func formatVector(v []Sample) string {
	var parts []string
	for _, s := range v {
		var labels []string
		for k, val := range s.Metric {
			labels = append(labels, fmt.Sprintf("%q:%q", k, val))
		}
		parts = append(parts, fmt.Sprintf("{%s} %s", strings.Join(labels, ","), s.V))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
