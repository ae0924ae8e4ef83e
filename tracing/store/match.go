package store

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// KindName returns Jaeger's lower-case name of a span kind ("server",
// "client"…), and "" for an unspecified kind, as Jaeger's span.kind tag does.
func KindName(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindInternal:
		return "internal"
	case ptrace.SpanKindServer:
		return "server"
	case ptrace.SpanKindClient:
		return "client"
	case ptrace.SpanKindProducer:
		return "producer"
	case ptrace.SpanKindConsumer:
		return "consumer"
	}
	return ""
}

// ServiceName returns the service.name resource attribute, or
// "unknown_service" as the OpenTelemetry SDKs name a service without one.
func ServiceName(res pcommon.Resource) string {
	if v, ok := res.Attributes().Get("service.name"); ok && v.AsString() != "" {
		return v.AsString()
	}
	return "unknown_service"
}

// StatusCodeName is the otel.status_code tag Jaeger derives from a span's
// status: "OK", "ERROR", or "" when unset.
func StatusCodeName(c ptrace.StatusCode) string {
	switch c {
	case ptrace.StatusCodeOk:
		return "OK"
	case ptrace.StatusCodeError:
		return "ERROR"
	}
	return ""
}

// SyntheticTags returns the tags Jaeger derives from a span's kind and
// status rather than from its attributes, so that a search for
// span.kind=server or error=true finds what the UI shows.
func SyntheticTags(span ptrace.Span) map[string]string {
	tags := map[string]string{}
	if k := KindName(span.Kind()); k != "" {
		tags["span.kind"] = k
	}
	if c := StatusCodeName(span.Status().Code()); c != "" {
		tags["otel.status_code"] = c
	}
	if span.Status().Code() == ptrace.StatusCodeError {
		tags["error"] = "true"
	}
	if d := span.Status().Message(); d != "" {
		tags["otel.status_description"] = d
	}
	return tags
}

// TagMatches reports whether the span carries the tag key=value: as a
// synthetic tag, a span attribute, a resource attribute or an attribute of
// one of its events, comparing values as strings.
func TagMatches(res pcommon.Resource, span ptrace.Span, key, value string) bool {
	if v, ok := SyntheticTags(span)[key]; ok && v == value {
		return true
	}
	if attrEquals(span.Attributes(), key, value) || attrEquals(res.Attributes(), key, value) {
		return true
	}
	for i := 0; i < span.Events().Len(); i++ {
		if attrEquals(span.Events().At(i).Attributes(), key, value) {
			return true
		}
	}
	return false
}

func attrEquals(m pcommon.Map, key, value string) bool {
	v, ok := m.Get(key)
	return ok && v.AsString() == value
}

// Matches reports whether one span satisfies every condition of q.
func Matches(res pcommon.Resource, span ptrace.Span, q TraceQuery) bool {
	if q.ServiceName != "" && ServiceName(res) != q.ServiceName {
		return false
	}
	if q.OperationName != "" && span.Name() != q.OperationName {
		return false
	}
	start := span.StartTimestamp().AsTime()
	if !q.StartTimeMin.IsZero() && start.Before(q.StartTimeMin) {
		return false
	}
	if !q.StartTimeMax.IsZero() && start.After(q.StartTimeMax) {
		return false
	}
	d := SpanDuration(span)
	if d < q.DurationMin || (q.DurationMax > 0 && d > q.DurationMax) {
		return false
	}
	for k, v := range q.Tags {
		if !TagMatches(res, span, k, v) {
			return false
		}
	}
	return true
}

// SpanDuration is end minus start, zero when the end precedes the start.
func SpanDuration(span ptrace.Span) time.Duration {
	s, e := span.StartTimestamp(), span.EndTimestamp()
	if e <= s {
		return 0
	}
	return time.Duration(e - s)
}
