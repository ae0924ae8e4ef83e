package collector

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
)

func probe(t *testing.T, params url.Values) (int, map[string]float64) {
	t.Helper()
	rec := httptest.NewRecorder()
	newProber(promslog.NewNopLogger()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/probe?"+params.Encode(), nil))
	if rec.Code != http.StatusOK {
		return rec.Code, nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		out[name] = f.Metric[0].GetGauge().GetValue()
	}
	return rec.Code, out
}

func TestProber(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer ok.Close()
	okAddr := strings.TrimPrefix(ok.URL, "http://")
	// A closed port: listen, note the address, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name    string
		params  url.Values
		success float64
		status  float64
	}{
		{"tcp open", url.Values{"target": {okAddr}}, 1, -1},
		{"tcp closed", url.Values{"target": {closed}, "module": {"tcp"}}, 0, -1},
		{"http healthy", url.Values{"target": {okAddr}, "module": {"http"}, "path": {"/healthz"}}, 1, 200},
		{"http failing", url.Values{"target": {okAddr}, "module": {"http"}, "path": {"broken"}}, 0, 500},
		{"http closed", url.Values{"target": {closed}, "module": {"http"}}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := probe(t, tc.params)
			if code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			if m["panorama_probe_success"] != tc.success {
				t.Errorf("success = %v, want %v", m["panorama_probe_success"], tc.success)
			}
			if _, ok := m["panorama_probe_duration_seconds"]; !ok {
				t.Error("no duration")
			}
			if tc.status >= 0 && m["panorama_probe_http_status_code"] != tc.status {
				t.Errorf("status code = %v, want %v", m["panorama_probe_http_status_code"], tc.status)
			}
		})
	}
	for _, bad := range []url.Values{{}, {"target": {"nohost"}}, {"target": {okAddr}, "module": {"icmp"}}} {
		if code, _ := probe(t, bad); code != http.StatusBadRequest {
			t.Errorf("%v: status %d, want 400", bad, code)
		}
	}
}
