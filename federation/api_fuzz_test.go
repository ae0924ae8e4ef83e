package federation

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// FuzzQueryParams throws arbitrary parameters at the query, series, labels
// and label values endpoints, by GET and by POST: whatever the input, the
// federator answers in Prometheus' JSON envelope, never panics, and never
// answers 5xx, but for a query that runs past its timeout (503 timeout, as
// Prometheus).
func FuzzQueryParams(f *testing.F) {
	le := startLeaf(f, labels.FromStrings("cluster", "east"), workload(1))
	lw := startLeaf(f, labels.FromStrings("cluster", "west"), workload(2))
	opts := testOptions(le.addr, lw.addr)
	opts.ReplicaLabels = []string{"replica"}
	opts.QueryMaxSamples = 20000
	opts.QueryTimeout = 5 * time.Second
	fed := startFederator(f, opts)
	mux := http.NewServeMux()
	fed.f.Mount(mux.Handle)

	now := "1795400000"
	for _, s := range []struct {
		endpoint                                              uint8
		query, start, end, step, match, partial, dedup, limit string
		post                                                  bool
	}{
		{0, "1+1", now, "", "", "", "", "", "", true},
		{0, "up", now, "", "", "", "false", "false", "", false},
		{1, `sum by (cluster) (rate(http_requests_total[5m]))`, "1795399000", now, "15", "", "", "", "", true},
		{1, "up", now, "1795399000", "15", "", "", "", "", false},
		{1, "up", "0", "1e12", "0.001", "", "", "", "", false},
		{1, "up", "-Inf", "+Inf", "-1", "", "", "", "", false},
		{2, "", "", "", "", `up{cluster="east"}`, "", "", "10", false},
		{2, "", "NaN", "", "", `{__name__=~".*"}`, "", "", "-1", true},
		{3, "", "", "", "", `up`, "", "", "1", false},
		{4, "cluster", "", "", "", `http_requests_total`, "", "", "", false},
		{4, "__name__", "2020-01-01T00:00:00Z", "", "", "", "", "", "x", false},
		{4, "bad label!", "", "", "", "", "", "", "", false},
		{0, "sum(up", "", "", "", "", "maybe", "", "", false},
		{0, strings.Repeat("(", 500) + "1" + strings.Repeat(")", 500), "", "", "", "", "", "", "", false},
		{0, `count_over_time(up[100d:1ms])`, now, "", "", "", "", "", "", false},
		{0, `label_replace(up, "a", "$1", "job", "(.*")`, now, "", "", "", "", "", "", false},
		{0, "up @ 1e300", "", "", "", "", "", "", "", false},
		{1, "up", now, now, "1e300", "", "", "", "", false},
		{0, "\x00\xff", "\x00", "", "", "\x00", "\x00", "\x00", "\x00", true},
		{0, `{replica="a"}`, now, "", "", "", "true", "0", "", false},
		{5, "up", now, "", "", "", "", "", "", false},
	} {
		f.Add(s.endpoint, s.query, s.start, s.end, s.step, s.match, s.partial, s.dedup, s.limit, s.post)
	}

	f.Fuzz(func(t *testing.T, endpoint uint8, query, start, end, step, match, partial, dedup, limit string, post bool) {
		params := url.Values{}
		set := func(k, v string) {
			if v != "" {
				params.Set(k, v)
			}
		}
		var path string
		switch endpoint % 6 {
		case 0:
			path = "/api/v1/query"
			set("query", query)
			set("time", start)
		case 1:
			path = "/api/v1/query_range"
			set("query", query)
			set("start", start)
			set("end", end)
			set("step", step)
		case 2:
			path = "/api/v1/series"
			set("start", start)
			set("end", end)
		case 3:
			path = "/api/v1/labels"
			set("start", start)
			set("end", end)
		case 4:
			// The label name is part of the path.
			path = "/api/v1/label/" + url.PathEscape(query) + "/values"
			set("start", start)
			set("end", end)
		case 5:
			path = "/api/v1/query_exemplars"
			set("query", query)
			set("start", start)
			set("end", end)
		}
		set("match[]", match)
		set("partial_response", partial)
		set("dedup", dedup)
		set("limit", limit)

		var req *http.Request
		if post && endpoint%6 != 4 {
			req = httptest.NewRequest(http.MethodPost, path, strings.NewReader(params.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req = httptest.NewRequest(http.MethodGet, "/", nil)
			req.URL.Path = path
			req.URL.RawQuery = params.Encode()
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)

		if rec.Code == http.StatusNotFound || rec.Code == http.StatusMethodNotAllowed || rec.Code == http.StatusMovedPermanently {
			// The router's answer to a path it has no route for (a label
			// name with a slash, for one): not the API's.
			return
		}
		var body struct {
			Status    string `json:"status"`
			ErrorType string `json:"errorType"`
			Error     string `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", req.Method, req.URL, rec.Code, rec.Body.String())
		}
		switch {
		case rec.Code == http.StatusOK && body.Status == "success":
		case rec.Code == http.StatusBadRequest && body.ErrorType == "bad_data":
		case rec.Code == http.StatusUnprocessableEntity && body.ErrorType == "execution":
		case rec.Code == http.StatusServiceUnavailable && body.ErrorType == "timeout":
		default:
			t.Fatalf("%s %s %v: %d %s %s: %s", req.Method, path, params, rec.Code, body.Status, body.ErrorType, body.Error)
		}
	})
}
