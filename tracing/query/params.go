package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/panorama-obs/panorama/tracing/store"
)

// Defaults of Jaeger's query service.
const (
	DefaultSearchLookback     = 48 * time.Hour
	DefaultDependencyLookback = 24 * time.Hour
	DefaultLimit              = 100
)

// Times and durations are kept in int64 nanoseconds (until 2262), so larger
// parameters are refused rather than overflowed.
const (
	maxMicros = math.MaxInt64 / int64(time.Microsecond)
	maxMillis = math.MaxInt64 / int64(time.Millisecond)
)

// ParamError is a bad query parameter; the API answers 400 with it.
type ParamError struct {
	Param string
	Err   error
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("unable to parse param '%s': %v", e.Param, e.Err)
}

func (e *ParamError) Unwrap() error { return e.Err }

func paramErr(p string, err error) error { return &ParamError{Param: p, Err: err} }

// SearchParams is a parsed /api/traces request: either trace IDs, or a
// search.
type SearchParams struct {
	TraceIDs []pcommon.TraceID
	Query    store.TraceQuery
}

// ParseSearch parses the parameters of /api/traces as Jaeger does:
// service, operation, tag (key:value, repeatable), tags (a JSON object),
// start and end (Unix microseconds; without start, end minus lookback),
// lookback (a Go duration such as 1h; Jaeger UI's "custom" is ignored),
// minDuration and maxDuration (Go durations), limit, traceID (repeatable).
func ParseSearch(v url.Values, now time.Time) (SearchParams, error) {
	var p SearchParams
	for _, s := range v["traceID"] {
		id, err := ParseTraceID(s)
		if err != nil {
			return p, paramErr("traceID", err)
		}
		p.TraceIDs = append(p.TraceIDs, id)
	}
	q := store.TraceQuery{ServiceName: v.Get("service"), OperationName: v.Get("operation")}

	end, err := parseMicros(v, "end", now)
	if err != nil {
		return p, err
	}
	lookback := DefaultSearchLookback
	if lb := v.Get("lookback"); lb != "" && lb != "custom" {
		d, err := time.ParseDuration(lb)
		if err != nil {
			return p, paramErr("lookback", err)
		}
		if d <= 0 {
			return p, paramErr("lookback", errors.New("must be positive"))
		}
		lookback = d
	}
	start, err := parseMicros(v, "start", end.Add(-lookback))
	if err != nil {
		return p, err
	}
	if start.After(end) {
		return p, paramErr("start", fmt.Errorf("start %d is after end %d", start.UnixMicro(), end.UnixMicro()))
	}
	q.StartTimeMin, q.StartTimeMax = start, end

	q.Tags = map[string]string{}
	for _, t := range v["tag"] {
		k, val, ok := strings.Cut(t, ":")
		if !ok || k == "" {
			return p, paramErr("tag", fmt.Errorf("malformed 'tag' parameter, expecting key:value, received: %s", t))
		}
		q.Tags[k] = val
	}
	for _, t := range v["tags"] {
		var m map[string]any
		if err := json.Unmarshal([]byte(t), &m); err != nil {
			return p, paramErr("tags", fmt.Errorf("malformed 'tags' parameter, cannot unmarshal JSON: %w", err))
		}
		for k, val := range m {
			switch x := val.(type) {
			case string:
				q.Tags[k] = x
			case bool:
				q.Tags[k] = strconv.FormatBool(x)
			case float64:
				q.Tags[k] = strconv.FormatFloat(x, 'f', -1, 64)
			default:
				return p, paramErr("tags", fmt.Errorf("value of tag %q must be a string, number or boolean", k))
			}
		}
	}
	if len(q.Tags) == 0 {
		q.Tags = nil
	}

	q.NumTraces = DefaultLimit
	if l := v.Get("limit"); l != "" {
		n, err := strconv.ParseInt(l, 10, 32)
		if err != nil {
			return p, paramErr("limit", err)
		}
		if n < 0 {
			return p, paramErr("limit", errors.New("must not be negative"))
		}
		if n > 0 {
			q.NumTraces = int(n)
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"minDuration", &q.DurationMin}, {"maxDuration", &q.DurationMax}} {
		s := v.Get(d.name)
		if s == "" {
			continue
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			return p, paramErr(d.name, err)
		}
		if dur < 0 {
			return p, paramErr(d.name, errors.New("must not be negative"))
		}
		*d.dst = dur
	}
	if q.DurationMin != 0 && q.DurationMax != 0 && q.DurationMax < q.DurationMin {
		return p, paramErr("maxDuration", errors.New("'maxDuration' should be greater than 'minDuration'"))
	}
	if len(p.TraceIDs) == 0 && q.ServiceName == "" {
		return p, paramErr("service", errors.New("parameter 'service' is required"))
	}
	p.Query = q
	return p, nil
}

// parseMicros reads Unix microseconds, or returns def when absent.
func parseMicros(v url.Values, name string, def time.Time) (time.Time, error) {
	s := v.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, paramErr(name, err)
	}
	if n < 0 || n > maxMicros {
		return time.Time{}, paramErr(name, fmt.Errorf("%d is out of range: Unix microseconds from 0 to %d", n, int64(maxMicros)))
	}
	return time.UnixMicro(n), nil
}

// ParseDependencies parses /api/dependencies: endTs (Unix milliseconds,
// default now) and lookback (milliseconds, default a day).
func ParseDependencies(v url.Values, now time.Time) (end time.Time, lookback time.Duration, err error) {
	end = now
	if s := v.Get("endTs"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return end, 0, paramErr("endTs", err)
		}
		if n < 0 || n > maxMillis {
			return end, 0, paramErr("endTs", fmt.Errorf("%d is out of range: Unix milliseconds from 0 to %d", n, int64(maxMillis)))
		}
		end = time.UnixMilli(n)
	}
	lookback = DefaultDependencyLookback
	if s := v.Get("lookback"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return end, 0, paramErr("lookback", err)
		}
		if n <= 0 || n > maxMillis {
			return end, 0, paramErr("lookback", fmt.Errorf("%d is out of range: milliseconds from 1 to %d", n, int64(maxMillis)))
		}
		lookback = time.Duration(n) * time.Millisecond
	}
	return end, lookback, nil
}

var spanKinds = map[string]bool{"": true, "unspecified": true, "internal": true, "server": true, "client": true, "producer": true, "consumer": true}

// ParseOperations parses /api/operations: service (required) and spanKind.
func ParseOperations(v url.Values) (store.OperationQuery, error) {
	q := store.OperationQuery{ServiceName: v.Get("service"), SpanKind: v.Get("spanKind")}
	if q.ServiceName == "" {
		return q, paramErr("service", errors.New("parameter 'service' is required"))
	}
	if !spanKinds[q.SpanKind] {
		return q, paramErr("spanKind", fmt.Errorf("unsupported span kind %q: use unspecified, internal, server, client, producer or consumer", q.SpanKind))
	}
	return q, nil
}
