package elasticsearch

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// spanDoc is the document of one span in <prefix>-span-YYYY-MM-DD.
type spanDoc struct {
	TraceID           string          `json:"traceID"`
	SpanID            string          `json:"spanID"`
	ParentSpanID      string          `json:"parentSpanID,omitempty"`
	ServiceName       string          `json:"serviceName"`
	OperationName     string          `json:"operationName"`
	SpanKind          string          `json:"spanKind"`
	StatusCode        string          `json:"statusCode,omitempty"`
	StartTime         string          `json:"startTime"`
	StartTimeUnixNano int64           `json:"startTimeUnixNano"`
	DurationNanos     int64           `json:"durationNanos"`
	Tags              []tagDoc        `json:"tags"`
	OTLP              json.RawMessage `json:"otlp"`
}

// tagDoc is one searchable key/value of a span.
type tagDoc struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Type   string `json:"type"`
	Source string `json:"source"` // span, resource, event, or derived
}

// serviceDoc is one service/operation/kind in <prefix>-service-YYYY-MM-DD.
type serviceDoc struct {
	ServiceName   string `json:"serviceName"`
	OperationName string `json:"operationName"`
	SpanKind      string `json:"spanKind"`
}

// id is the document ID: repeated writes of one service, operation and
// kind replace one document.
func (d serviceDoc) id() string {
	h := sha256.Sum256([]byte(d.ServiceName + "\x00" + d.OperationName + "\x00" + d.SpanKind))
	return hex.EncodeToString(h[:16])
}

// dependenciesDoc is one bucket of the service graph in
// <prefix>-dependencies-YYYY-MM-DD, with _id = timestampUnixNano.
type dependenciesDoc struct {
	Timestamp         string          `json:"timestamp"`
	TimestampUnixNano int64           `json:"timestampUnixNano"`
	Dependencies      []dependencyDoc `json:"dependencies"`
}

type dependencyDoc struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount uint64 `json:"callCount"`
}

var jsonMarshaler = &ptrace.JSONMarshaler{}

// newSpanDoc builds the document of one span.
func newSpanDoc(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans, sp ptrace.Span) (spanDoc, error) {
	one := ptrace.NewTraces()
	ors := one.ResourceSpans().AppendEmpty()
	rs.Resource().CopyTo(ors.Resource())
	ors.SetSchemaUrl(rs.SchemaUrl())
	oss := ors.ScopeSpans().AppendEmpty()
	ss.Scope().CopyTo(oss.Scope())
	oss.SetSchemaUrl(ss.SchemaUrl())
	sp.CopyTo(oss.Spans().AppendEmpty())
	otlp, err := jsonMarshaler.MarshalTraces(one)
	if err != nil {
		return spanDoc{}, fmt.Errorf("encode span %s as OTLP/JSON: %w", sp.SpanID(), err)
	}
	start := sp.StartTimestamp()
	var dur int64
	if sp.EndTimestamp() > start {
		dur = int64(sp.EndTimestamp() - start)
	}
	d := spanDoc{
		TraceID:           sp.TraceID().String(),
		SpanID:            sp.SpanID().String(),
		ServiceName:       store.ServiceName(rs.Resource()),
		OperationName:     sp.Name(),
		SpanKind:          store.KindName(sp.Kind()),
		StatusCode:        store.StatusCodeName(sp.Status().Code()),
		StartTime:         start.AsTime().UTC().Format(time.RFC3339Nano),
		StartTimeUnixNano: int64(start),
		DurationNanos:     dur,
		OTLP:              otlp,
	}
	if !sp.ParentSpanID().IsEmpty() {
		d.ParentSpanID = sp.ParentSpanID().String()
	}
	d.Tags = searchTags(rs.Resource(), sp)
	return d, nil
}

// searchTags lists the distinct key/values a tag query can match: the
// span's attributes, its resource's, its events', and the tags Jaeger
// derives from kind and status.
func searchTags(res pcommon.Resource, sp ptrace.Span) []tagDoc {
	tags := []tagDoc{}
	seen := map[[2]string]bool{}
	add := func(key, value, typ, source string) {
		k := [2]string{key, value}
		if seen[k] {
			return
		}
		seen[k] = true
		tags = append(tags, tagDoc{Key: key, Value: value, Type: typ, Source: source})
	}
	addMap := func(m pcommon.Map, source string) {
		m.Range(func(k string, v pcommon.Value) bool {
			add(k, v.AsString(), typeName(v.Type()), source)
			return true
		})
	}
	derived := store.SyntheticTags(sp)
	keys := make([]string, 0, len(derived))
	for k := range derived {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, derived[k], "string", "derived")
	}
	addMap(sp.Attributes(), "span")
	addMap(res.Attributes(), "resource")
	for i := 0; i < sp.Events().Len(); i++ {
		addMap(sp.Events().At(i).Attributes(), "event")
	}
	return tags
}

func typeName(t pcommon.ValueType) string {
	switch t {
	case pcommon.ValueTypeStr:
		return "string"
	case pcommon.ValueTypeInt:
		return "int64"
	case pcommon.ValueTypeDouble:
		return "float64"
	case pcommon.ValueTypeBool:
		return "bool"
	case pcommon.ValueTypeBytes:
		return "binary"
	case pcommon.ValueTypeSlice:
		return "array"
	case pcommon.ValueTypeMap:
		return "map"
	}
	return "empty"
}

var jsonUnmarshaler = &ptrace.JSONUnmarshaler{}

// appendSpan adds the span kept in a document's otlp field to td.
func appendSpan(td ptrace.Traces, otlp json.RawMessage) error {
	one, err := jsonUnmarshaler.UnmarshalTraces(otlp)
	if err != nil {
		return fmt.Errorf("decode stored span: %w", err)
	}
	one.ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
	return nil
}
