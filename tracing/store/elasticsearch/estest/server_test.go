package estest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func call(t *testing.T, method, url, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return res.StatusCode, out, res.Header
}

const template = `{"index_patterns":["t-*"],"priority":1,"template":{"mappings":{"dynamic":"strict","properties":{
	"name":{"type":"keyword","ignore_above":5},"n":{"type":"long"},
	"tags":{"type":"nested","properties":{"key":{"type":"keyword"},"value":{"type":"keyword"}}}}}}}`

func setup(t *testing.T) *Server {
	s := New(t)
	if code, out, _ := call(t, "PUT", s.URL+"/_index_template/t", template); code != 200 {
		t.Fatalf("put template: %d %v", code, out)
	}
	bulk := `{"index":{"_index":"t-1","_id":"a"}}
{"name":"ab","n":1,"tags":[{"key":"k","value":"x"},{"key":"j","value":"y"}]}
{"index":{"_index":"t-1","_id":"b"}}
{"name":"toolongname","n":9007199254740993,"tags":[{"key":"k","value":"y"}]}
{"index":{"_index":"t-1","_id":"c"}}
{"name":"ab","surprise":1}
`
	code, out, hdr := call(t, "POST", s.URL+"/_bulk", bulk)
	if code != 200 || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Fatalf("bulk: %d %v %v", code, out, hdr)
	}
	items := out["items"].([]any)
	if out["errors"] != true || len(items) != 3 {
		t.Fatalf("bulk answer: %v", out)
	}
	third := items[2].(map[string]any)["index"].(map[string]any)
	if third["status"] != 400.0 || third["error"].(map[string]any)["type"] != "strict_dynamic_mapping_exception" {
		t.Errorf("a field outside the strict mapping was accepted: %v", third)
	}
	return s
}

func ids(out map[string]any) []string {
	var r []string
	for _, h := range out["hits"].(map[string]any)["hits"].([]any) {
		r = append(r, h.(map[string]any)["_id"].(string))
	}
	return r
}

func TestSearchSemantics(t *testing.T) {
	s := setup(t)
	for _, tc := range []struct {
		name, body string
		want       string
	}{
		{"term", `{"query":{"term":{"name":"ab"}}}`, "a"},
		{"ignore_above is not indexed", `{"query":{"term":{"name":"toolongname"}}}`, ""},
		{"exact long range", `{"query":{"range":{"n":{"gte":9007199254740993}}}}`, "b"},
		{"exact long range, exclusive", `{"query":{"range":{"n":{"gt":9007199254740992,"lt":9007199254740993}}}}`, ""},
		{"nested on one element", `{"query":{"nested":{"path":"tags","query":{"bool":{"filter":[{"term":{"tags.key":"k"}},{"term":{"tags.value":"x"}}]}}}}}`, "a"},
		{"nested across elements does not match", `{"query":{"nested":{"path":"tags","query":{"bool":{"filter":[{"term":{"tags.key":"j"}},{"term":{"tags.value":"x"}}]}}}}}`, ""},
		{"nested field outside a nested query", `{"query":{"term":{"tags.key":"k"}}}`, ""},
		{"sort desc", `{"query":{"match_all":{}},"sort":[{"n":"desc"}]}`, "b,a"},
		{"search_after on a long", `{"sort":[{"n":"asc"}],"search_after":[1]}`, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := call(t, "POST", s.URL+"/t-*/_search", tc.body)
			if code != 200 {
				t.Fatalf("search: %d %v", code, out)
			}
			if got := strings.Join(ids(out), ","); got != tc.want {
				t.Errorf("hits = %q, want %q", got, tc.want)
			}
		})
	}
	s.CheckSupported(t)
}

func TestUnsupportedIsRefusedAndRecorded(t *testing.T) {
	s := setup(t)
	for _, body := range []string{
		`{"query":{"match":{"name":"ab"}}}`,
		`{"query":{"bool":{"filter":[{"prefix":{"name":"a"}}]}}}`,
		`{"aggs":{"x":{"avg":{"field":"n"}}}}`,
		`{"query":{"term":{"name":"ab"}},"from":5}`,
	} {
		code, out, _ := call(t, "POST", s.URL+"/t-1/_search", body)
		if code != 400 {
			t.Errorf("%s: status %d %v, want 400", body, code, out)
		}
	}
	if n := len(s.Unsupported()); n != 4 {
		t.Errorf("recorded %d unsupported requests, want 4: %v", n, s.Unsupported())
	}
}

func TestMissingIndex(t *testing.T) {
	s := setup(t)
	if code, _, _ := call(t, "POST", s.URL+"/nope/_search", `{}`); code != 404 {
		t.Errorf("search of a missing index: %d, want 404", code)
	}
	if code, _, _ := call(t, "POST", s.URL+"/nope,t-1/_search?ignore_unavailable=true", `{}`); code != 200 {
		t.Errorf("search with ignore_unavailable: %d, want 200", code)
	}
	if code, _, _ := call(t, "DELETE", s.URL+"/nope", ``); code != 404 {
		t.Errorf("delete of a missing index: %d, want 404", code)
	}
}

func TestTermsAggregationOrder(t *testing.T) {
	s := setup(t)
	code, out, _ := call(t, "POST", s.URL+"/t-1/_search", `{"size":0,"aggs":{"names":{"terms":{"field":"name","size":5,"order":[{"top":"desc"},{"_key":"asc"}]},"aggs":{"top":{"max":{"field":"n"}}}}}}`)
	if code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	buckets := out["aggregations"].(map[string]any)["names"].(map[string]any)["buckets"].([]any)
	// "toolongname" is above ignore_above: no bucket.
	if len(buckets) != 1 || buckets[0].(map[string]any)["key"] != "ab" {
		t.Errorf("buckets = %v", buckets)
	}
}

func TestStopAndStart(t *testing.T) {
	s := Serve(t, "127.0.0.1:0")
	if code, _, _ := call(t, "PUT", s.URL+"/_index_template/t", template); code != 200 {
		t.Fatalf("put template: %d", code)
	}
	url := s.URL
	s.Stop()
	if _, err := http.Get(url + "/"); err == nil {
		t.Fatal("the stopped fake answered")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.URL != url {
		t.Errorf("restarted on %s, not %s", s.URL, url)
	}
	if code, _, hdr := call(t, "GET", url+"/", ""); code != 200 || hdr.Get("X-Elastic-Product") != "Elasticsearch" {
		t.Errorf("info after restart: %d %v", code, hdr)
	}
	if len(s.Templates()) != 1 {
		t.Errorf("templates lost over a restart")
	}
}
