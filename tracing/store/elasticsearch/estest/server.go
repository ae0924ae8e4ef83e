// Package estest is a fake Elasticsearch for tests: an HTTP server that
// speaks the REST protocol for exactly the calls Panorama's Elasticsearch
// store makes (info, composable index templates, _bulk, index, _search with
// the query and aggregation kinds the store uses, _cat/indices, index
// deletion), keeps documents in memory, applies the templates' mappings
// (strict mappings reject unknown fields, as Elasticsearch does), and lets a
// test inject failures: the whole server down, or single _bulk items
// rejected with a status of the test's choice.
//
// Request bodies are decoded with go-elasticsearch's typed API structures;
// a query, aggregation or API the fake does not implement is answered with
// 400 and recorded (see Unsupported), so a store change that relies on
// something new cannot pass silently.
package estest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8/typedapi/indices/putindextemplate"
)

// Down is how the server behaves while down.
type Down int

const (
	// Up serves requests.
	Up Down = iota
	// Unavailable answers every request with 503.
	Unavailable
	// Reset closes every connection without an answer.
	Reset
)

func (d Down) String() string {
	switch d {
	case Up:
		return "up"
	case Unavailable:
		return "unavailable"
	case Reset:
		return "reset"
	}
	return fmt.Sprintf("Down(%d)", int(d))
}

// Request is a request the server received.
type Request struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	// Body is kept for every request but _bulk.
	Body []byte
}

// Server is a fake Elasticsearch.
type Server struct {
	// URL is the base URL of the server once started with New or NewTLS.
	URL string
	srv *httptest.Server
	// httpSrv and addr are the server of Serve.
	httpSrv *http.Server
	addr    string

	mu          sync.Mutex
	down        Down
	templates   map[string]json.RawMessage
	indices     map[string]*index
	seq         int64
	requests    []Request
	unsupported []string
	bulkSeen    map[string]int // index/_id → times sent in _bulk
	bulkFailure func(index, id string, attempt int) int
	version     string
}

// NewServer returns a fake that is not listening; serve its Handler.
func NewServer() *Server {
	return &Server{
		templates: map[string]json.RawMessage{},
		indices:   map[string]*index{},
		bulkSeen:  map[string]int{},
		version:   "8.19.7",
	}
}

// New starts a fake on a loopback port, closed when the test ends.
func New(t testing.TB) *Server {
	s := NewServer()
	s.srv = httptest.NewServer(s.Handler())
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// NewTLS starts a fake serving HTTPS with httptest's certificate, closed
// when the test ends; Certificate gives the certificate to trust.
func NewTLS(t testing.TB) *Server {
	s := NewServer()
	s.srv = httptest.NewTLSServer(s.Handler())
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Serve starts a fake with plain HTTP on addr ("127.0.0.1:0": any free
// port), stopped when the test ends. Unlike New, it can be stopped and
// started again on the same address, so a client sees the connection
// refused in between, as with a cluster that is down.
func Serve(t testing.TB, addr string) *Server {
	s := NewServer()
	if err := s.listen(addr); err != nil {
		t.Fatalf("estest: listen on %s: %v", addr, err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.httpSrv = srv
	s.addr = ln.Addr().String()
	s.URL = "http://" + s.addr
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// Stop closes the listener and every connection of a fake started with
// Serve: clients get connection refused until Start.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.httpSrv
	s.httpSrv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start listens again, on the same address, after Stop. The documents
// and templates are kept, as a restarted cluster keeps its data.
func (s *Server) Start() error {
	s.mu.Lock()
	addr := s.addr
	s.mu.Unlock()
	return s.listen(addr)
}

// HTTPTestServer returns the underlying server of New or NewTLS.
func (s *Server) HTTPTestServer() *httptest.Server { return s.srv }

// SetDown takes the server down (Unavailable, Reset) or up again (Up).
func (s *Server) SetDown(d Down) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = d
}

// SetBulkItemFailure makes the server answer a _bulk item with the status
// f returns (0: store it). attempt counts the times the item's index and
// _id have been sent in a _bulk request, from 1.
func (s *Server) SetBulkItemFailure(f func(index, id string, attempt int) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bulkFailure = f
}

// Templates returns the bodies of the index templates put, by name.
func (s *Server) Templates() map[string]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]json.RawMessage{}
	for k, v := range s.templates {
		out[k] = append(json.RawMessage(nil), v...)
	}
	return out
}

// Indices returns the names of the indices, sorted.
func (s *Server) Indices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name := range s.indices {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Docs returns the documents of an index by _id.
func (s *Server) Docs(name string) map[string]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]json.RawMessage{}
	if ix, ok := s.indices[name]; ok {
		for id, d := range ix.docs {
			out[id] = append(json.RawMessage(nil), d.raw...)
		}
	}
	return out
}

// CountDocs counts the documents of the indices matching a pattern (with *
// wildcards).
func (s *Server) CountDocs(pattern string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name, ix := range s.indices {
		if ok, _ := path.Match(pattern, name); ok {
			n += len(ix.docs)
		}
	}
	return n
}

// Mappings returns the mappings an index was created with.
func (s *Server) Mappings(name string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ix, ok := s.indices[name]; ok {
		return ix.mappings
	}
	return nil
}

// CreateIndex creates an empty index, applying the matching template.
func (s *Server) CreateIndex(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexFor(name)
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Unsupported lists the requests the fake refused because it does not
// implement them.
func (s *Server) Unsupported() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unsupported...)
}

// CheckSupported fails the test if the fake refused any request as
// unsupported.
func (s *Server) CheckSupported(t testing.TB) {
	t.Helper()
	for _, u := range s.Unsupported() {
		t.Errorf("estest: unsupported request: %s", u)
	}
}

// Handler serves the fake's REST API.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serve)
}

// apiError is an Elasticsearch error answer.
type apiError struct {
	status int
	typ    string
	reason string
}

func (e *apiError) Error() string { return e.typ + ": " + e.reason }

func errorf(status int, typ, format string, args ...any) *apiError {
	return &apiError{status: status, typ: typ, reason: fmt.Sprintf(format, args...)}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	down := s.down
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone()}
	if !strings.HasSuffix(r.URL.Path, "/_bulk") {
		rec.Body = body
	}
	s.requests = append(s.requests, rec)
	s.mu.Unlock()

	switch down {
	case Reset:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case Unavailable:
		writeError(w, errorf(http.StatusServiceUnavailable, "cluster_block_exception", "estest: server is down"))
		return
	}

	var (
		status = http.StatusOK
		out    any
		err    *apiError
	)
	p := strings.Trim(r.URL.Path, "/")
	parts := strings.Split(p, "/")
	q := r.URL.Query()
	switch {
	case p == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		out = s.info()
	case len(parts) == 2 && parts[0] == "_index_template" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		out, err = s.putTemplate(parts[1], body)
	case parts[len(parts)-1] == "_bulk" && len(parts) <= 2 && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		defaultIndex := ""
		if len(parts) == 2 {
			defaultIndex = parts[0]
		}
		out, err = s.bulk(defaultIndex, body, q.Get("refresh"))
	case len(parts) == 3 && parts[1] == "_doc" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		status, out, err = s.indexDoc(parts[0], parts[2], body, q.Get("refresh"))
	case len(parts) <= 2 && parts[len(parts)-1] == "_search" && (r.Method == http.MethodPost || r.Method == http.MethodGet):
		target := "_all"
		if len(parts) == 2 {
			target = parts[0]
		}
		out, err = s.search(target, q, body)
	case parts[0] == "_cat" && len(parts) >= 2 && parts[1] == "indices" && r.Method == http.MethodGet:
		target := "*"
		if len(parts) == 3 {
			target = parts[2]
		}
		out, err = s.catIndices(target, q)
	case len(parts) == 1 && !strings.HasPrefix(parts[0], "_") && r.Method == http.MethodDelete:
		out, err = s.deleteIndex(parts[0], q)
	default:
		err = s.unsupportedf("%s %s", r.Method, r.URL.Path)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_ = json.NewEncoder(w).Encode(out)
	}
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	cause := map[string]any{"type": e.typ, "reason": e.reason}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error":  map[string]any{"root_cause": []any{cause}, "type": e.typ, "reason": e.reason},
		"status": e.status,
	})
}

// unsupportedf records and returns the refusal of something the fake does
// not implement.
func (s *Server) unsupportedf(format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.unsupported = append(s.unsupported, msg)
	s.mu.Unlock()
	return errorf(http.StatusBadRequest, "estest_unsupported_exception", "not implemented by estest: %s", msg)
}

func (s *Server) info() any {
	return map[string]any{
		"name":         "estest",
		"cluster_name": "estest",
		"cluster_uuid": "estest-cluster",
		"version": map[string]any{
			"number":                              s.version,
			"build_flavor":                        "default",
			"lucene_version":                      "9.12.0",
			"minimum_wire_compatibility_version":  "7.17.0",
			"minimum_index_compatibility_version": "7.0.0",
		},
		"tagline": "You Know, for Search",
	}
}

func (s *Server) putTemplate(name string, body []byte) (any, *apiError) {
	var req putindextemplate.Request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errorf(http.StatusBadRequest, "x_content_parse_exception", "index template %s: %v", name, err)
	}
	if len(req.IndexPatterns) == 0 {
		return nil, errorf(http.StatusBadRequest, "action_request_validation_exception", "index template %s: index patterns are missing", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.templates[name] = append(json.RawMessage(nil), body...)
	return map[string]any{"acknowledged": true}, nil
}

// templateFor returns the mappings of the highest-priority template whose
// patterns match name.
func (s *Server) templateFor(name string) map[string]any {
	best, bestPrio := map[string]any(nil), int64(-1)
	for _, raw := range s.templates {
		var t struct {
			IndexPatterns []string `json:"index_patterns"`
			Priority      int64    `json:"priority"`
			Template      struct {
				Mappings map[string]any `json:"mappings"`
			} `json:"template"`
		}
		if json.Unmarshal(raw, &t) != nil {
			continue
		}
		for _, p := range t.IndexPatterns {
			if ok, _ := path.Match(p, name); ok && t.Priority > bestPrio {
				best, bestPrio = t.Template.Mappings, t.Priority
			}
		}
	}
	return best
}

// indexFor returns the index, creating it from the matching template.
// s.mu must be held.
func (s *Server) indexFor(name string) *index {
	ix, ok := s.indices[name]
	if !ok {
		ix = &index{name: name, mappings: s.templateFor(name), docs: map[string]*doc{}}
		s.indices[name] = ix
	}
	return ix
}

func validIndexName(name string) bool {
	return name != "" && name == strings.ToLower(name) && !strings.ContainsAny(name, `\/*?"<>| ,#:`) && !strings.HasPrefix(name, "_")
}

// put stores a document; s.mu must be held.
func (s *Server) put(indexName, id string, source []byte) (int, map[string]any, *apiError) {
	if !validIndexName(indexName) {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_index_name_exception", "Invalid index name [%s]", indexName)
	}
	ix := s.indexFor(indexName)
	d, err := parseDoc(ix.mappings, source)
	if err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "document_parsing_exception", "[1:1] failed to parse: %v", err)
	}
	if err := validate(ix.mappings, d); err != nil {
		return 0, nil, err
	}
	s.seq++
	status, result, version := http.StatusCreated, "created", int64(1)
	if old, ok := ix.docs[id]; ok {
		status, result, version = http.StatusOK, "updated", old.version+1
	}
	ix.docs[id] = &doc{id: id, raw: append(json.RawMessage(nil), source...), fields: d, version: version, seq: s.seq}
	return status, map[string]any{
		"_index": indexName, "_id": id, "_version": version, "result": result,
		"_shards": map[string]any{"total": 2, "successful": 1, "failed": 0},
		"_seq_no": s.seq, "_primary_term": 1, "status": status,
	}, nil
}

func checkRefresh(v string) *apiError {
	switch v {
	case "", "true", "false", "wait_for":
		return nil
	}
	return errorf(http.StatusBadRequest, "illegal_argument_exception", "unknown value for refresh: [%s].", v)
}

func (s *Server) indexDoc(indexName, id string, body []byte, refresh string) (int, any, *apiError) {
	if err := checkRefresh(refresh); err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status, res, err := s.put(indexName, id, body)
	if err != nil {
		return 0, nil, err
	}
	delete(res, "status")
	return status, res, nil
}

func (s *Server) bulk(defaultIndex string, body []byte, refresh string) (any, *apiError) {
	if err := checkRefresh(refresh); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	var lines [][]byte
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			lines = append(lines, append([]byte(nil), l...))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, errorf(http.StatusBadRequest, "illegal_argument_exception", "read _bulk body: %v", err)
	}
	if len(lines) == 0 {
		return nil, errorf(http.StatusBadRequest, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
	}
	var items []any
	hasErrors := false
	for i := 0; i < len(lines); i++ {
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(lines[i], &action); err != nil || len(action) != 1 {
			return nil, errorf(http.StatusBadRequest, "illegal_argument_exception", "Malformed action/metadata line [%d]", i+1)
		}
		var op string
		for k := range action {
			op = k
		}
		meta := action[op]
		if op != "index" {
			return nil, s.unsupportedf("_bulk action %q", op)
		}
		if i+1 >= len(lines) {
			return nil, errorf(http.StatusBadRequest, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
		}
		source := lines[i+1]
		i++
		if meta.Index == "" {
			meta.Index = defaultIndex
		}
		if meta.ID == "" {
			return nil, s.unsupportedf("_bulk index action without _id")
		}
		s.mu.Lock()
		key := meta.Index + "/" + meta.ID
		s.bulkSeen[key]++
		attempt := s.bulkSeen[key]
		fail := s.bulkFailure
		s.mu.Unlock()
		if fail != nil {
			if code := fail(meta.Index, meta.ID, attempt); code != 0 {
				hasErrors = true
				items = append(items, map[string]any{op: itemError(meta.Index, meta.ID, code)})
				continue
			}
		}
		s.mu.Lock()
		_, res, err := s.put(meta.Index, meta.ID, source)
		s.mu.Unlock()
		if err != nil {
			hasErrors = true
			items = append(items, map[string]any{op: map[string]any{
				"_index": meta.Index, "_id": meta.ID, "status": err.status,
				"error": map[string]any{"type": err.typ, "reason": err.reason},
			}})
			continue
		}
		items = append(items, map[string]any{op: res})
	}
	return map[string]any{"took": 1, "errors": hasErrors, "items": items}, nil
}

// itemError is the answer to an item failed on purpose.
func itemError(indexName, id string, code int) map[string]any {
	typ, reason := "estest_injected_exception", "injected failure"
	switch {
	case code == http.StatusTooManyRequests:
		typ, reason = "es_rejected_execution_exception", "rejected execution of coordinating operation [estest]"
	case code == http.StatusBadRequest:
		typ, reason = "document_parsing_exception", "[1:42] failed to parse field [startTimeUnixNano] of type [long]"
	case code >= 500:
		typ, reason = "unavailable_shards_exception", "[estest][0] primary shard is not active"
	}
	return map[string]any{
		"_index": indexName, "_id": id, "status": code,
		"error": map[string]any{"type": typ, "reason": reason},
	}
}

// resolve turns an index expression (comma list with wildcards) into index
// names; s.mu must be held.
func (s *Server) resolve(target string, ignoreUnavailable bool) ([]string, *apiError) {
	seen := map[string]bool{}
	var out []string
	for _, expr := range strings.Split(target, ",") {
		if expr == "_all" {
			expr = "*"
		}
		if strings.Contains(expr, "*") {
			for name := range s.indices {
				if ok, _ := path.Match(expr, name); ok && !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
			}
			continue
		}
		if _, ok := s.indices[expr]; !ok {
			if ignoreUnavailable {
				continue
			}
			return nil, errorf(http.StatusNotFound, "index_not_found_exception", "no such index [%s]", expr)
		}
		if !seen[expr] {
			seen[expr] = true
			out = append(out, expr)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (s *Server) catIndices(target string, q map[string][]string) (any, *apiError) {
	if get(q, "format") != "json" {
		return nil, s.unsupportedf("_cat/indices without format=json")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.resolve(target, true)
	if err != nil {
		return nil, err
	}
	rows := []map[string]string{}
	for _, n := range names {
		rows = append(rows, map[string]string{
			"index": n, "health": "green", "status": "open",
			"docs.count": strconv.Itoa(len(s.indices[n].docs)),
		})
	}
	return rows, nil
}

func (s *Server) deleteIndex(target string, q map[string][]string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Contains(target, "*") {
		return nil, s.unsupportedfLocked("DELETE with a wildcard %q", target)
	}
	names, err := s.resolve(target, get(q, "ignore_unavailable") == "true")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		delete(s.indices, n)
	}
	return map[string]any{"acknowledged": true}, nil
}

func (s *Server) unsupportedfLocked(format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	s.unsupported = append(s.unsupported, msg)
	return errorf(http.StatusBadRequest, "estest_unsupported_exception", "not implemented by estest: %s", msg)
}

func get(q map[string][]string, k string) string {
	if v := q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}
