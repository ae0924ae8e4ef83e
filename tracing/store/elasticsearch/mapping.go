package elasticsearch

import (
	"fmt"
	"strings"
	"time"
)

// Index kinds: each is a family of daily indices <prefix>-<kind>-YYYY-MM-DD
// with one composable index template.
const (
	kindSpan         = "span"
	kindService      = "service"
	kindDependencies = "dependencies"
)

var indexKinds = []string{kindSpan, kindService, kindDependencies}

const dayLayout = "2006-01-02"

// templateVersion is stored in each template's version and _meta, so an
// operator can see which Panorama mapping an index was created with.
const templateVersion = 1

// indexName is the daily index of kind holding data of time t (UTC day).
func (s *Store) indexName(kind string, t time.Time) string {
	return s.cfg.IndexPrefix + "-" + kind + "-" + t.UTC().Format(dayLayout)
}

// indexPattern matches every daily index of kind.
func (s *Store) indexPattern(kind string) string {
	return s.cfg.IndexPrefix + "-" + kind + "-*"
}

// indexDay parses the day of a daily index of kind; ok is false for any
// other name.
func (s *Store) indexDay(kind, name string) (time.Time, bool) {
	rest, found := strings.CutPrefix(name, s.cfg.IndexPrefix+"-"+kind+"-")
	if !found {
		return time.Time{}, false
	}
	day, err := time.Parse(dayLayout, rest)
	if err != nil {
		return time.Time{}, false
	}
	return day, true
}

// indicesBetween lists the daily indices of kind whose day overlaps
// [from, to], or the pattern of all of them when a bound is open or the
// range spans more days than a URL should list.
func (s *Store) indicesBetween(kind string, from, to time.Time) []string {
	if from.IsZero() || to.IsZero() {
		return []string{s.indexPattern(kind)}
	}
	if to.Before(from) {
		return nil
	}
	first := from.UTC().Truncate(24 * time.Hour)
	last := to.UTC().Truncate(24 * time.Hour)
	if last.Sub(first) > 92*24*time.Hour {
		return []string{s.indexPattern(kind)}
	}
	var out []string
	for d := first; !d.After(last); d = d.Add(24 * time.Hour) {
		out = append(out, s.indexName(kind, d))
	}
	return out
}

// keyword is a keyword field; Jaeger uses the same ignore_above so that a
// long value is kept in _source but not indexed.
var keyword = map[string]any{"type": "keyword", "ignore_above": 256}

// mappings are the explicit mappings of each index kind. dynamic: strict
// makes Elasticsearch reject a document with a field the mapping lacks, so
// a mapping that falls behind the documents fails loudly in tests.
func mappings(kind string) map[string]any {
	switch kind {
	case kindSpan:
		return map[string]any{
			"dynamic": "strict",
			"properties": map[string]any{
				"traceID":           keyword,
				"spanID":            keyword,
				"parentSpanID":      keyword,
				"serviceName":       keyword,
				"operationName":     keyword,
				"spanKind":          keyword,
				"statusCode":        keyword,
				"startTime":         map[string]any{"type": "date_nanos"},
				"startTimeUnixNano": map[string]any{"type": "long"},
				"durationNanos":     map[string]any{"type": "long"},
				// One nested document per distinct key/value of the span's
				// attributes, its resource's, its events' and the tags
				// derived from kind and status, so that a tag query
				// matches key and value of one and the same attribute.
				"tags": map[string]any{
					"type":    "nested",
					"dynamic": "strict",
					"properties": map[string]any{
						"key":    keyword,
						"value":  keyword,
						"type":   keyword,
						"source": keyword,
					},
				},
				// The span as OTLP/JSON (one ResourceSpans with its
				// resource, scope and the span): kept in _source only, it
				// gives back the exact span.
				"otlp": map[string]any{"type": "object", "enabled": false},
			},
		}
	case kindService:
		return map[string]any{
			"dynamic": "strict",
			"properties": map[string]any{
				"serviceName":   keyword,
				"operationName": keyword,
				"spanKind":      keyword,
			},
		}
	case kindDependencies:
		return map[string]any{
			"dynamic": "strict",
			"properties": map[string]any{
				"timestamp":         map[string]any{"type": "date_nanos"},
				"timestampUnixNano": map[string]any{"type": "long"},
				"dependencies": map[string]any{
					"type":    "nested",
					"dynamic": "strict",
					"properties": map[string]any{
						"parent":    keyword,
						"child":     keyword,
						"callCount": map[string]any{"type": "long"},
					},
				},
			},
		}
	}
	panic(fmt.Sprintf("unknown index kind %q", kind))
}

// templateName is the composable index template of kind.
func (s *Store) templateName(kind string) string {
	return s.cfg.IndexPrefix + "-" + kind
}

// indexTemplate is the body of PUT _index_template/<prefix>-<kind>.
func (s *Store) indexTemplate(kind string) map[string]any {
	settings := map[string]any{
		"number_of_shards":   s.cfg.Shards,
		"number_of_replicas": s.cfg.Replicas,
	}
	if kind != kindSpan {
		// Small indices: one shard is plenty.
		settings["number_of_shards"] = 1
	}
	return map[string]any{
		"index_patterns": []string{s.indexPattern(kind)},
		// Above the built-in templates (priority 100 and below for logs-*,
		// metrics-*), so ours applies to our names.
		"priority": 200,
		"version":  templateVersion,
		"template": map[string]any{
			"settings": settings,
			"mappings": mappings(kind),
		},
		"_meta": map[string]any{"managed_by": "panorama", "version": templateVersion},
	}
}
