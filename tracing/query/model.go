package query

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// The types below are the JSON the Jaeger UI and Grafana's Jaeger data
// source read (Jaeger's internal/uimodel), field for field.

// Response is the envelope of every Jaeger API answer.
type Response struct {
	Data   any     `json:"data"`
	Total  int     `json:"total"`
	Limit  int     `json:"limit"`
	Offset int     `json:"offset"`
	Errors []Error `json:"errors"`
}

// Error is one entry of Response.Errors.
type Error struct {
	Code    int    `json:"code,omitempty"`
	Msg     string `json:"msg"`
	TraceID string `json:"traceID,omitempty"`
}

// Trace is a trace in the Jaeger UI model.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
	Warnings  []string           `json:"warnings"`
}

// Span is a span in the Jaeger UI model; times are microseconds.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	Flags         uint32      `json:"flags,omitempty"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     uint64      `json:"startTime"`
	Duration      uint64      `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID,omitempty"`
	Warnings      []string    `json:"warnings"`
}

// Reference links a span to its parent (CHILD_OF) or to a linked span
// (FOLLOWS_FROM).
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Process is the service (resource) that emitted spans.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// Log is a span event.
type Log struct {
	Timestamp uint64     `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// KeyValue is a typed tag: type is string, bool, int64, float64 or binary.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type,omitempty"`
	Value any    `json:"value"`
}

// Operation is an entry of /api/operations.
type Operation struct {
	Name     string `json:"name"`
	SpanKind string `json:"spanKind"`
}

// TraceIDString renders a trace ID as Jaeger does: 16 hex digits when the
// high half is zero, else 32.
func TraceIDString(id pcommon.TraceID) string {
	hi, lo := binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
	if hi == 0 {
		return fmt.Sprintf("%016x", lo)
	}
	return fmt.Sprintf("%016x%016x", hi, lo)
}

// SpanIDString renders a span ID as 16 hex digits.
func SpanIDString(id pcommon.SpanID) string {
	return fmt.Sprintf("%016x", binary.BigEndian.Uint64(id[:]))
}

// ParseTraceID parses a trace ID of 1 to 32 hex digits, as Jaeger's
// TraceIDFromString does (shorter IDs are the low bits).
func ParseTraceID(s string) (pcommon.TraceID, error) {
	var id pcommon.TraceID
	if s == "" || len(s) > 32 {
		return id, fmt.Errorf("trace ID %q must be 1 to 32 hex digits", s)
	}
	var hi, lo uint64
	var err error
	if len(s) > 16 {
		if hi, err = strconv.ParseUint(s[:len(s)-16], 16, 64); err != nil {
			return id, fmt.Errorf("trace ID %q is not hexadecimal", s)
		}
		s = s[len(s)-16:]
	}
	if lo, err = strconv.ParseUint(s, 16, 64); err != nil {
		return id, fmt.Errorf("trace ID %q is not hexadecimal", s)
	}
	binary.BigEndian.PutUint64(id[:8], hi)
	binary.BigEndian.PutUint64(id[8:], lo)
	if id.IsEmpty() {
		return id, fmt.Errorf("trace ID %q is zero", s)
	}
	return id, nil
}

// jsMaxSafeInteger is the largest integer a JavaScript number holds
// exactly; larger int64 values are sent as strings, as Jaeger does.
const jsMaxSafeInteger = int64(1)<<53 - 1

func keyValue(k string, v pcommon.Value) KeyValue {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return KeyValue{Key: k, Type: "string", Value: v.Str()}
	case pcommon.ValueTypeBool:
		return KeyValue{Key: k, Type: "bool", Value: v.Bool()}
	case pcommon.ValueTypeInt:
		i := v.Int()
		if i > jsMaxSafeInteger || i < -jsMaxSafeInteger {
			return KeyValue{Key: k, Type: "int64", Value: strconv.FormatInt(i, 10)}
		}
		return KeyValue{Key: k, Type: "int64", Value: i}
	case pcommon.ValueTypeDouble:
		return KeyValue{Key: k, Type: "float64", Value: v.Double()}
	case pcommon.ValueTypeBytes:
		return KeyValue{Key: k, Type: "binary", Value: v.Bytes().AsRaw()}
	}
	// Maps, slices and empty values become their JSON text.
	return KeyValue{Key: k, Type: "string", Value: v.AsString()}
}

func keyValues(m pcommon.Map, skip string) []KeyValue {
	out := make([]KeyValue, 0, m.Len())
	m.Range(func(k string, v pcommon.Value) bool {
		if k != skip {
			out = append(out, keyValue(k, v))
		}
		return true
	})
	return out
}

func str(k, v string) KeyValue { return KeyValue{Key: k, Type: "string", Value: v} }

// FromTraces converts spans into Jaeger UI traces, one per trace ID in the
// order their first span appears. With adjust, tags and log fields are
// sorted by key (the "event" field first) as Jaeger's query service does,
// and spans by start time.
func FromTraces(td ptrace.Traces, adjust bool) []Trace {
	type acc struct {
		trace     *Trace
		processes map[string]string // process fingerprint → ID
	}
	byID := map[pcommon.TraceID]*acc{}
	var order []pcommon.TraceID
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		proc := Process{ServiceName: store.ServiceName(rs.Resource()), Tags: keyValues(rs.Resource().Attributes(), "service.name")}
		if adjust {
			sortTags(proc.Tags)
		}
		fp := fingerprint(proc)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				s := ss.Spans().At(k)
				a, ok := byID[s.TraceID()]
				if !ok {
					a = &acc{trace: &Trace{TraceID: TraceIDString(s.TraceID()), Spans: []Span{}, Processes: map[string]Process{}}, processes: map[string]string{}}
					byID[s.TraceID()] = a
					order = append(order, s.TraceID())
				}
				pid, ok := a.processes[fp]
				if !ok {
					pid = "p" + strconv.Itoa(len(a.processes)+1)
					a.processes[fp] = pid
					a.trace.Processes[pid] = proc
				}
				a.trace.Spans = append(a.trace.Spans, convertSpan(ss.Scope(), s, pid, adjust))
			}
		}
	}
	out := make([]Trace, 0, len(order))
	for _, id := range order {
		t := byID[id].trace
		if adjust {
			slices.SortStableFunc(t.Spans, func(a, b Span) int {
				switch {
				case a.StartTime < b.StartTime:
					return -1
				case a.StartTime > b.StartTime:
					return 1
				}
				return strings.Compare(a.SpanID, b.SpanID)
			})
		}
		out = append(out, *t)
	}
	return out
}

func fingerprint(p Process) string {
	var b strings.Builder
	b.WriteString(p.ServiceName)
	for _, t := range p.Tags {
		fmt.Fprintf(&b, "\x00%s\x00%s\x00%v", t.Key, t.Type, t.Value)
	}
	return b.String()
}

func convertSpan(scope pcommon.InstrumentationScope, s ptrace.Span, pid string, adjust bool) Span {
	tid := TraceIDString(s.TraceID())
	refs := []Reference{}
	if !s.ParentSpanID().IsEmpty() {
		refs = append(refs, Reference{RefType: "CHILD_OF", TraceID: tid, SpanID: SpanIDString(s.ParentSpanID())})
	}
	for i := 0; i < s.Links().Len(); i++ {
		l := s.Links().At(i)
		refs = append(refs, Reference{RefType: "FOLLOWS_FROM", TraceID: TraceIDString(l.TraceID()), SpanID: SpanIDString(l.SpanID())})
	}

	tags := make([]KeyValue, 0, s.Attributes().Len()+6)
	if scope.Name() != "" {
		tags = append(tags, str("otel.scope.name", scope.Name()))
	}
	if scope.Version() != "" {
		tags = append(tags, str("otel.scope.version", scope.Version()))
	}
	tags = append(tags, keyValues(s.Attributes(), "")...)
	if k := store.KindName(s.Kind()); k != "" {
		tags = append(tags, str("span.kind", k))
	}
	if c := store.StatusCodeName(s.Status().Code()); c != "" {
		tags = append(tags, str("otel.status_code", c))
	}
	if s.Status().Code() == ptrace.StatusCodeError {
		tags = append(tags, KeyValue{Key: "error", Type: "bool", Value: true})
	}
	if m := s.Status().Message(); m != "" {
		tags = append(tags, str("otel.status_description", m))
	}
	if ts := s.TraceState().AsRaw(); ts != "" {
		tags = append(tags, str("w3c.tracestate", ts))
	}

	logs := make([]Log, 0, s.Events().Len())
	for i := 0; i < s.Events().Len(); i++ {
		e := s.Events().At(i)
		fields := make([]KeyValue, 0, e.Attributes().Len()+1)
		if _, has := e.Attributes().Get("event"); e.Name() != "" && !has {
			fields = append(fields, str("event", e.Name()))
		}
		fields = append(fields, keyValues(e.Attributes(), "")...)
		if adjust {
			sortLogFields(fields)
		}
		logs = append(logs, Log{Timestamp: micros(uint64(e.Timestamp())), Fields: fields})
	}
	if adjust {
		sortTags(tags)
	}
	return Span{
		TraceID:       tid,
		SpanID:        SpanIDString(s.SpanID()),
		OperationName: s.Name(),
		References:    refs,
		StartTime:     micros(uint64(s.StartTimestamp())),
		Duration:      uint64(store.SpanDuration(s).Microseconds()),
		Tags:          tags,
		Logs:          logs,
		ProcessID:     pid,
	}
}

func micros(ns uint64) uint64 { return ns / 1000 }

func sortTags(t []KeyValue) {
	slices.SortStableFunc(t, func(a, b KeyValue) int { return strings.Compare(a.Key, b.Key) })
}

// sortLogFields sorts by key with "event" first, as Jaeger's adjuster does.
func sortLogFields(f []KeyValue) {
	slices.SortStableFunc(f, func(a, b KeyValue) int {
		switch {
		case a.Key == b.Key:
			return 0
		case a.Key == "event":
			return -1
		case b.Key == "event":
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
}
