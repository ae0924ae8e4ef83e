package storetest_test

import (
	"context"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/storetest"
)

// memStore is a small reference store: it proves the suite passes for a
// store that does what store.Store documents, and, with bugs set, that it
// fails for stores that don't.
type memStore struct {
	bugs map[string]bool

	mu    sync.Mutex
	spans map[pcommon.TraceID][]ptrace.Traces // one span per Traces
	deps  map[time.Time][]store.DependencyLink
}

func newMemStore(bugs ...string) *memStore {
	m := &memStore{bugs: map[string]bool{}, spans: map[pcommon.TraceID][]ptrace.Traces{}, deps: map[time.Time][]store.DependencyLink{}}
	for _, b := range bugs {
		m.bugs[b] = true
	}
	return m
}

func (m *memStore) WriteTraces(_ context.Context, td ptrace.Traces) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				sp := ss.Spans().At(k)
				one := ptrace.NewTraces()
				ors := one.ResourceSpans().AppendEmpty()
				rs.Resource().CopyTo(ors.Resource())
				ors.SetSchemaUrl(rs.SchemaUrl())
				oss := ors.ScopeSpans().AppendEmpty()
				ss.Scope().CopyTo(oss.Scope())
				oss.SetSchemaUrl(ss.SchemaUrl())
				sp.CopyTo(oss.Spans().AppendEmpty())
				if m.bugs["drop-event-attributes"] {
					evs := oss.Spans().At(0).Events()
					for e := 0; e < evs.Len(); e++ {
						evs.At(e).Attributes().Clear()
					}
				}
				list := m.spans[sp.TraceID()]
				replaced := false
				if !m.bugs["duplicate"] {
					for n, old := range list {
						if spanOf(old).SpanID() == sp.SpanID() {
							list[n] = one
							replaced = true
						}
					}
				}
				if !replaced {
					list = append(list, one)
				}
				m.spans[sp.TraceID()] = list
			}
		}
	}
	return nil
}

func spanOf(one ptrace.Traces) ptrace.Span {
	return one.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
}

func resourceOf(one ptrace.Traces) pcommon.Resource {
	return one.ResourceSpans().At(0).Resource()
}

func serviceOf(one ptrace.Traces) string {
	v, _ := resourceOf(one).Attributes().Get("service.name")
	return v.AsString()
}

func (m *memStore) trace(id pcommon.TraceID) ptrace.Traces {
	td := ptrace.NewTraces()
	for _, one := range m.spans[id] {
		one.ResourceSpans().At(0).CopyTo(td.ResourceSpans().AppendEmpty())
	}
	return td
}

func (m *memStore) GetTrace(_ context.Context, id pcommon.TraceID) (ptrace.Traces, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.spans[id]) == 0 {
		return ptrace.NewTraces(), store.ErrTraceNotFound
	}
	return m.trace(id), nil
}

func (m *memStore) GetServices(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := map[string]bool{}
	for _, list := range m.spans {
		for _, one := range list {
			set[serviceOf(one)] = true
		}
	}
	var out []string
	for s := range set {
		out = append(out, s)
	}
	if !m.bugs["unsorted-services"] {
		sort.Strings(out)
	} else {
		sort.Sort(sort.Reverse(sort.StringSlice(out)))
	}
	return out, nil
}

func kindName(k ptrace.SpanKind) string {
	if k == ptrace.SpanKindUnspecified {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "SPAN_KIND_"))
}

func (m *memStore) GetOperations(_ context.Context, q store.OperationQuery) ([]store.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := map[store.Operation]bool{}
	for _, list := range m.spans {
		for _, one := range list {
			sp := spanOf(one)
			k := kindName(sp.Kind())
			if serviceOf(one) != q.ServiceName || (q.SpanKind != "" && q.SpanKind != k && !(q.SpanKind == "unspecified" && k == "")) {
				continue
			}
			set[store.Operation{Name: sp.Name(), SpanKind: k}] = true
		}
	}
	var out []store.Operation
	for op := range set {
		out = append(out, op)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].SpanKind < out[j].SpanKind
	})
	return out, nil
}

func tagMatches(one ptrace.Traces, key, value string) bool {
	sp := spanOf(one)
	switch {
	case key == "error" && value == "true" && sp.Status().Code() == ptrace.StatusCodeError:
		return true
	case key == "span.kind" && value == kindName(sp.Kind()):
		return true
	case key == "otel.status_code" && value == "ERROR" && sp.Status().Code() == ptrace.StatusCodeError,
		key == "otel.status_code" && value == "OK" && sp.Status().Code() == ptrace.StatusCodeOk:
		return true
	}
	maps := []pcommon.Map{sp.Attributes(), resourceOf(one).Attributes()}
	for i := 0; i < sp.Events().Len(); i++ {
		maps = append(maps, sp.Events().At(i).Attributes())
	}
	for _, mp := range maps {
		if v, ok := mp.Get(key); ok && v.AsString() == value {
			return true
		}
	}
	return false
}

func (m *memStore) matches(one ptrace.Traces, q store.TraceQuery) bool {
	sp := spanOf(one)
	if serviceOf(one) != q.ServiceName {
		return false
	}
	if q.OperationName != "" && sp.Name() != q.OperationName {
		return false
	}
	start := sp.StartTimestamp().AsTime()
	if m.bugs["exclusive-time"] {
		if !q.StartTimeMin.IsZero() && !start.After(q.StartTimeMin) || !q.StartTimeMax.IsZero() && !start.Before(q.StartTimeMax) {
			return false
		}
	} else if !q.StartTimeMin.IsZero() && start.Before(q.StartTimeMin) || !q.StartTimeMax.IsZero() && start.After(q.StartTimeMax) {
		return false
	}
	d := time.Duration(0)
	if sp.EndTimestamp() > sp.StartTimestamp() {
		d = time.Duration(sp.EndTimestamp() - sp.StartTimestamp())
	}
	if d < q.DurationMin || q.DurationMax > 0 && d > q.DurationMax {
		return false
	}
	if m.bugs["tags-any-span"] {
		return true // checked over the whole trace in FindTraces
	}
	for k, v := range q.Tags {
		if !tagMatches(one, k, v) {
			return false
		}
	}
	return true
}

func (m *memStore) FindTraces(_ context.Context, q store.TraceQuery) ([]ptrace.Traces, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	newest := map[pcommon.TraceID]pcommon.Timestamp{}
	for id, list := range m.spans {
		for _, one := range list {
			if !m.matches(one, q) {
				continue
			}
			if ts := spanOf(one).StartTimestamp(); ts > newest[id] {
				newest[id] = ts
			}
		}
		if _, ok := newest[id]; ok && m.bugs["tags-any-span"] {
			for k, v := range q.Tags {
				found := false
				for _, one := range list {
					found = found || tagMatches(one, k, v)
				}
				if !found {
					delete(newest, id)
				}
			}
		}
	}
	ids := make([]pcommon.TraceID, 0, len(newest))
	for id := range newest {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return newest[ids[i]] > newest[ids[j]] })
	n := q.NumTraces
	if n <= 0 {
		n = store.DefaultNumTraces
	}
	if len(ids) > n && !m.bugs["no-limit"] {
		ids = ids[:n]
	}
	out := make([]ptrace.Traces, len(ids))
	for i, id := range ids {
		out[i] = m.trace(id)
	}
	return out, nil
}

func (m *memStore) WriteDependencies(_ context.Context, ts time.Time, links []store.DependencyLink) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bugs["deps-append"] {
		m.deps[ts.UTC()] = append(m.deps[ts.UTC()], links...)
		return nil
	}
	m.deps[ts.UTC()] = append([]store.DependencyLink(nil), links...)
	return nil
}

func (m *memStore) GetDependencies(_ context.Context, endTs time.Time, lookback time.Duration) ([]store.DependencyLink, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	start := endTs.Add(-lookback)
	sum := map[[2]string]uint64{}
	for ts, links := range m.deps {
		in := ts.After(start) && !ts.After(endTs)
		if m.bugs["deps-closed-lower"] {
			in = !ts.Before(start) && !ts.After(endTs)
		}
		if !in {
			continue
		}
		for _, l := range links {
			sum[[2]string{l.Parent, l.Child}] += l.CallCount
		}
	}
	var out []store.DependencyLink
	for k, n := range sum {
		out = append(out, store.DependencyLink{Parent: k[0], Child: k[1], CallCount: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Parent != out[j].Parent {
			return out[i].Parent < out[j].Parent
		}
		return out[i].Child < out[j].Child
	})
	return out, nil
}

func (m *memStore) Close() error { return nil }

func TestReferenceStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return newMemStore() })
}

// TestReferenceStoreAtMidnight places the dataset right after a UTC
// midnight, where "today" holds almost nothing yet.
func TestReferenceStoreAtMidnight(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 1, 0, time.UTC)
	storetest.Run(t, func(*testing.T) store.Store { return newMemStore() }, storetest.WithNow(func() time.Time { return at }))
}

const brokenEnv = "STORETEST_BROKEN_STORE"

// TestBrokenStore runs the suite against a store with one bug. It only
// runs as a child of TestSuiteFailsBrokenStores, which expects it to fail.
func TestBrokenStore(t *testing.T) {
	bug := os.Getenv(brokenEnv)
	if bug == "" {
		t.Skip("run by TestSuiteFailsBrokenStores")
	}
	storetest.Run(t, func(*testing.T) store.Store { return newMemStore(bug) })
}

// TestSuiteFailsBrokenStores proves the suite can fail: for each bug, the
// suite run against the reference store with that bug fails in the
// subtests that cover it. Each run is a child process, so its failures are
// observed rather than failing this test.
func TestSuiteFailsBrokenStores(t *testing.T) {
	for _, tc := range []struct {
		bug      string
		failures []string // subtests that must fail
	}{
		{"drop-event-attributes", []string{"Read/GetTrace", "Read/FindTraces/event_attribute", "Idempotent"}},
		{"duplicate", []string{"Idempotent", "Replace"}},
		{"unsorted-services", []string{"Read/GetServices"}},
		{"tags-any-span", []string{"Read/FindTraces/two_tags_on_different_spans", "Read/FindTraces/operation_and_tag_on_different_spans"}},
		{"exclusive-time", []string{"Read/FindTraces/start_time_bounds_inclusive"}},
		{"no-limit", []string{"Read/FindTraces/limit_keeps_the_most_recent"}},
		{"deps-closed-lower", []string{"Dependencies"}},
		{"deps-append", []string{"Dependencies"}},
	} {
		t.Run(tc.bug, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenStore$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.bug)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with bug %q:\n%s", tc.bug, out)
			}
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("run the suite: %v", err)
			}
			for _, name := range tc.failures {
				if !strings.Contains(string(out), "--- FAIL: TestBrokenStore/"+name+" ") {
					t.Errorf("bug %q: subtest %s did not fail:\n%s", tc.bug, name, out)
				}
			}
			// The bug must not make unrelated parts fail.
			if strings.Contains(string(out), "--- FAIL: TestBrokenStore/EmptyStore") {
				t.Errorf("bug %q made EmptyStore fail:\n%s", tc.bug, out)
			}
		})
	}
}
