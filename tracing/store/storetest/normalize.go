package storetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// spanRecord is one span with its resource and scope in a form that compares
// with reflect.DeepEqual regardless of how a store groups spans into
// ResourceSpans and ScopeSpans or orders attributes.
type spanRecord struct {
	ResourceAttrs     map[string]any
	ResourceDropped   uint32
	ResourceSchemaURL string
	ScopeName         string
	ScopeVersion      string
	ScopeAttrs        map[string]any
	ScopeDropped      uint32
	ScopeSchemaURL    string

	TraceID, SpanID, ParentSpanID string
	TraceState                    string
	Flags                         uint32
	Name                          string
	Kind                          string
	Start, End                    uint64
	Attrs                         map[string]any
	DroppedAttrs                  uint32
	Events                        []eventRecord
	DroppedEvents                 uint32
	Links                         []linkRecord
	DroppedLinks                  uint32
	StatusCode                    string
	StatusMessage                 string
}

type eventRecord struct {
	Name    string
	Time    uint64
	Attrs   map[string]any
	Dropped uint32
}

type linkRecord struct {
	TraceID, SpanID string
	TraceState      string
	Flags           uint32
	Attrs           map[string]any
	Dropped         uint32
}

// normalize flattens td into one record per span, sorted by trace ID then
// span ID.
func normalize(td ptrace.Traces) []spanRecord {
	var out []spanRecord
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				sp := ss.Spans().At(k)
				r := spanRecord{
					ResourceAttrs:     rs.Resource().Attributes().AsRaw(),
					ResourceDropped:   rs.Resource().DroppedAttributesCount(),
					ResourceSchemaURL: rs.SchemaUrl(),
					ScopeName:         ss.Scope().Name(),
					ScopeVersion:      ss.Scope().Version(),
					ScopeAttrs:        ss.Scope().Attributes().AsRaw(),
					ScopeDropped:      ss.Scope().DroppedAttributesCount(),
					ScopeSchemaURL:    ss.SchemaUrl(),
					TraceID:           sp.TraceID().String(),
					SpanID:            sp.SpanID().String(),
					ParentSpanID:      sp.ParentSpanID().String(),
					TraceState:        sp.TraceState().AsRaw(),
					Flags:             sp.Flags(),
					Name:              sp.Name(),
					Kind:              sp.Kind().String(),
					Start:             uint64(sp.StartTimestamp()),
					End:               uint64(sp.EndTimestamp()),
					Attrs:             sp.Attributes().AsRaw(),
					DroppedAttrs:      sp.DroppedAttributesCount(),
					DroppedEvents:     sp.DroppedEventsCount(),
					DroppedLinks:      sp.DroppedLinksCount(),
					StatusCode:        sp.Status().Code().String(),
					StatusMessage:     sp.Status().Message(),
				}
				for e := 0; e < sp.Events().Len(); e++ {
					ev := sp.Events().At(e)
					r.Events = append(r.Events, eventRecord{
						Name: ev.Name(), Time: uint64(ev.Timestamp()),
						Attrs: ev.Attributes().AsRaw(), Dropped: ev.DroppedAttributesCount(),
					})
				}
				for l := 0; l < sp.Links().Len(); l++ {
					ln := sp.Links().At(l)
					r.Links = append(r.Links, linkRecord{
						TraceID: ln.TraceID().String(), SpanID: ln.SpanID().String(),
						TraceState: ln.TraceState().AsRaw(), Flags: ln.Flags(),
						Attrs: ln.Attributes().AsRaw(), Dropped: ln.DroppedAttributesCount(),
					})
				}
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TraceID != out[j].TraceID {
			return out[i].TraceID < out[j].TraceID
		}
		return out[i].SpanID < out[j].SpanID
	})
	return out
}

// diffSpans describes how got differs from want, or returns "" when they
// are equal.
func diffSpans(got, want []spanRecord) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	var b strings.Builder
	gotBy := map[string]spanRecord{}
	for _, r := range got {
		key := r.TraceID + "/" + r.SpanID
		if _, dup := gotBy[key]; dup {
			fmt.Fprintf(&b, "span %s returned more than once\n", key)
		}
		gotBy[key] = r
	}
	wantBy := map[string]bool{}
	for _, w := range want {
		key := w.TraceID + "/" + w.SpanID
		wantBy[key] = true
		g, ok := gotBy[key]
		if !ok {
			fmt.Fprintf(&b, "span %s (%s) missing\n", key, w.Name)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&b, "span %s (%s) differs:\n%s", key, w.Name, fieldDiff(g, w))
		}
	}
	for _, g := range got {
		if !wantBy[g.TraceID+"/"+g.SpanID] {
			fmt.Fprintf(&b, "unexpected span %s/%s (%s)\n", g.TraceID, g.SpanID, g.Name)
		}
	}
	if b.Len() == 0 {
		fmt.Fprintf(&b, "got %d spans, want %d\n", len(got), len(want))
	}
	return b.String()
}

// fieldDiff lists the fields of two records that differ.
func fieldDiff(got, want spanRecord) string {
	var b strings.Builder
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := 0; i < gv.NumField(); i++ {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&b, "  %s:\n    got  %s\n    want %s\n", gv.Type().Field(i).Name, show(g), show(w))
		}
	}
	return b.String()
}

// show renders a value with its Go types, since a store that turns an int
// into a float must not pass.
func show(v any) string {
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return fmt.Sprintf("%s %s", j, typesOf(v))
}

func typesOf(v any) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+":"+typesOf(x[k]))
		}
		return "{" + strings.Join(parts, ",") + "}"
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			parts = append(parts, typesOf(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case nil:
		return ""
	default:
		return fmt.Sprintf("%T", v)
	}
}

// traceIDsOf returns the trace ID of each trace, in order, and an error when
// one ptrace.Traces holds spans of more than one trace.
func traceIDsOf(traces []ptrace.Traces) ([]pcommon.TraceID, error) {
	var ids []pcommon.TraceID
	for _, td := range traces {
		recs := normalize(td)
		if len(recs) == 0 {
			return nil, fmt.Errorf("an empty trace was returned")
		}
		first := recs[0].TraceID
		for _, r := range recs {
			if r.TraceID != first {
				return nil, fmt.Errorf("one returned trace holds spans of traces %s and %s", first, r.TraceID)
			}
		}
		ids = append(ids, spansTraceID(td))
	}
	return ids, nil
}

func spansTraceID(td ptrace.Traces) pcommon.TraceID {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			if ss := rs.ScopeSpans().At(j); ss.Spans().Len() > 0 {
				return ss.Spans().At(0).TraceID()
			}
		}
	}
	return pcommon.TraceID{}
}
