package estest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"

	"github.com/elastic/go-elasticsearch/v8/typedapi/core/search"
	"github.com/elastic/go-elasticsearch/v8/typedapi/types"
	"github.com/elastic/go-elasticsearch/v8/typedapi/types/enums/sortorder"
)

// hit is a document found by a search, with the index it lives in.
type hit struct {
	index *index
	doc   *doc
}

// unsupportedFields returns the names of the non-zero fields of a typed
// API struct that are not in allowed.
func unsupportedFields(v any, allowed ...string) []string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	var out []string
	for i := 0; i < rv.NumField(); i++ {
		f := rv.Type().Field(i)
		if !ok[f.Name] && !rv.Field(i).IsZero() {
			name := strings.Split(f.Tag.Get("json"), ",")[0]
			if name == "" || name == "-" {
				name = f.Name
			}
			out = append(out, name)
		}
	}
	return out
}

func (s *Server) search(target string, q map[string][]string, body []byte) (any, *apiError) {
	var req search.Request
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, errorf(http.StatusBadRequest, "x_content_parse_exception", "search body: %v", err)
		}
	}
	if bad := unsupportedFields(&req, "Query", "Size", "Sort", "SearchAfter", "Aggregations", "TrackTotalHits"); len(bad) > 0 {
		return nil, s.unsupportedf("search options %v", bad)
	}
	// search_after values again, exactly: the typed structure reads
	// numbers as float64, which a long sort value does not survive.
	var exact struct {
		SearchAfter []json.RawMessage `json:"search_after"`
	}
	_ = json.Unmarshal(body, &exact)

	size := 10
	if req.Size != nil {
		size = *req.Size
	}
	if size < 0 || size > 10000 {
		return nil, errorf(http.StatusBadRequest, "illegal_argument_exception",
			"Result window is too large, from + size must be less than or equal to: [10000] but was [%d].", size)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.resolve(target, get(q, "ignore_unavailable") == "true")
	if err != nil {
		return nil, err
	}
	if len(names) == 0 && get(q, "allow_no_indices") == "false" {
		return nil, errorf(http.StatusNotFound, "index_not_found_exception", "no such index [%s]", target)
	}
	if req.Query != nil {
		if err := s.checkQuery(*req.Query); err != nil {
			return nil, err
		}
	}
	var hits []hit
	for _, n := range names {
		ix := s.indices[n]
		for _, d := range ix.docs {
			if req.Query != nil {
				ok, err := s.matches(ix, d, *req.Query, "")
				if err != nil {
					return nil, err
				}
				if !ok {
					continue
				}
			}
			hits = append(hits, hit{ix, d})
		}
	}

	sorts, err := s.parseSort(req.Sort)
	if err != nil {
		return nil, err
	}
	sortHits(hits, sorts)
	if len(exact.SearchAfter) > 0 {
		if len(exact.SearchAfter) != len(sorts) {
			return nil, errorf(http.StatusBadRequest, "illegal_argument_exception",
				"search_after has %d value(s) but sort has %d.", len(exact.SearchAfter), len(sorts))
		}
		after := make([]any, len(sorts))
		for i, raw := range exact.SearchAfter {
			d := json.NewDecoder(bytes.NewReader(raw))
			d.UseNumber()
			var v any
			_ = d.Decode(&v)
			after[i] = v
		}
		var rest []hit
		for _, h := range hits {
			if compareKeys(sortKeys(h, sorts), normalizeAfter(after, sorts), sorts) > 0 {
				rest = append(rest, h)
			}
		}
		hits = rest
	}

	res := map[string]any{
		"took":      1,
		"timed_out": false,
		"_shards":   map[string]any{"total": len(names), "successful": len(names), "skipped": 0, "failed": 0},
	}
	page := hits
	if len(page) > size {
		page = page[:size]
	}
	out := make([]any, 0, len(page))
	for _, h := range page {
		e := map[string]any{"_index": h.index.name, "_id": h.doc.id, "_score": nil, "_source": h.doc.raw}
		if len(sorts) > 0 {
			e["sort"] = sortKeys(h, sorts)
		}
		out = append(out, e)
	}
	hitsOut := map[string]any{"max_score": nil, "hits": out}
	if tt, ok := req.TrackTotalHits.(bool); !ok || tt {
		hitsOut["total"] = map[string]any{"value": len(hits), "relation": "eq"}
	}
	res["hits"] = hitsOut
	if len(req.Aggregations) > 0 {
		aggs, err := s.aggregate(req.Aggregations, hits)
		if err != nil {
			return nil, err
		}
		res["aggregations"] = aggs
	}
	return res, nil
}

// checkQuery refuses the query kinds and options the fake does not
// evaluate.
func (s *Server) checkQuery(q types.Query) *apiError {
	if bad := unsupportedFields(&q, "Bool", "Term", "Terms", "Range", "Nested", "MatchAll", "Ids"); len(bad) > 0 {
		return s.unsupportedfLocked("query kind %v", bad)
	}
	for field, tq := range q.Term {
		if bad := unsupportedFields(&tq, "Value"); len(bad) > 0 {
			return s.unsupportedfLocked("term options %v on %s", bad, field)
		}
	}
	if q.Terms != nil {
		if bad := unsupportedFields(q.Terms, "TermsQuery"); len(bad) > 0 {
			return s.unsupportedfLocked("terms options %v", bad)
		}
	}
	for field, rq := range q.Range {
		u, ok := rq.(*types.UntypedRangeQuery)
		if !ok {
			return s.unsupportedfLocked("range query of type %T", rq)
		}
		if bad := unsupportedFields(u, "Gt", "Gte", "Lt", "Lte"); len(bad) > 0 {
			return s.unsupportedfLocked("range options %v on %s", bad, field)
		}
	}
	if n := q.Nested; n != nil {
		if bad := unsupportedFields(n, "Path", "Query"); len(bad) > 0 {
			return s.unsupportedfLocked("nested options %v", bad)
		}
		if err := s.checkQuery(n.Query); err != nil {
			return err
		}
	}
	if b := q.Bool; b != nil {
		if bad := unsupportedFields(b, "Filter", "Must", "MustNot", "Should", "MinimumShouldMatch"); len(bad) > 0 {
			return s.unsupportedfLocked("bool options %v", bad)
		}
		for _, list := range [][]types.Query{b.Filter, b.Must, b.MustNot, b.Should} {
			for _, sub := range list {
				if err := s.checkQuery(sub); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// matches evaluates a query on a document; nested is the nested path the
// query runs in ("" at the top).
func (s *Server) matches(ix *index, d *doc, q types.Query, nested string) (bool, *apiError) {
	fields := d.fields
	if q.MatchAll != nil {
		return true, nil
	}
	if q.Ids != nil {
		found := false
		for _, id := range q.Ids.Values {
			found = found || id == d.id
		}
		if !found {
			return false, nil
		}
	}
	for field, tq := range q.Term {
		ok, err := s.fieldEquals(ix, fields, field, []any{tq.Value}, nested)
		if err != nil || !ok {
			return false, err
		}
	}
	if q.Terms != nil {
		for field, vals := range q.Terms.TermsQuery {
			list, ok := vals.([]any)
			if !ok {
				return false, s.unsupportedfLocked("terms lookup on %s", field)
			}
			ok, err := s.fieldEquals(ix, fields, field, list, nested)
			if err != nil || !ok {
				return false, err
			}
		}
	}
	for field, rq := range q.Range {
		ok, err := s.inRange(ix, fields, field, rq, nested)
		if err != nil || !ok {
			return false, err
		}
	}
	if q.Nested != nil {
		n := q.Nested
		if fm := fieldMapping(ix.mappings, n.Path); fm == nil || fm["type"] != "nested" {
			return false, errorf(http.StatusBadRequest, "query_shard_exception",
				"[nested] failed to create query: [nested] nested object under path [%s] is not of nested type", n.Path)
		}
		found := false
		for _, elem := range values(nil, fields, n.Path) {
			obj, ok := elem.(map[string]any)
			if !ok {
				continue
			}
			// Evaluate the inner query against a document holding only
			// this element under the path, as Lucene does with the
			// nested document.
			inner := &doc{id: d.id, fields: wrap(n.Path, obj)}
			ok, err := s.matches(ix, inner, n.Query, n.Path)
			if err != nil {
				return false, err
			}
			if ok {
				found = true
				break
			}
		}
		if !found {
			return false, nil
		}
	}
	if b := q.Bool; b != nil {
		for _, sub := range append(append([]types.Query(nil), b.Filter...), b.Must...) {
			ok, err := s.matches(ix, d, sub, nested)
			if err != nil || !ok {
				return false, err
			}
		}
		for _, sub := range b.MustNot {
			ok, err := s.matches(ix, d, sub, nested)
			if err != nil {
				return false, err
			}
			if ok {
				return false, nil
			}
		}
		if len(b.Should) > 0 {
			need := 0
			if len(b.Filter)+len(b.Must) == 0 {
				need = 1
			}
			switch m := b.MinimumShouldMatch.(type) {
			case nil:
			case float64:
				need = int(m)
			default:
				return false, s.unsupportedfLocked("minimum_should_match %v", m)
			}
			n := 0
			for _, sub := range b.Should {
				ok, err := s.matches(ix, d, sub, nested)
				if err != nil {
					return false, err
				}
				if ok {
					n++
				}
			}
			if n < need {
				return false, nil
			}
		}
	}
	return true, nil
}

func wrap(path string, obj map[string]any) map[string]any {
	parts := strings.Split(path, ".")
	var cur any = obj
	for i := len(parts) - 1; i >= 0; i-- {
		cur = map[string]any{parts[i]: cur}
	}
	return cur.(map[string]any)
}

// reachable reports whether a field can be queried in the nested context:
// a field inside a nested object is only visible to a nested query on it.
func reachable(mappings map[string]any, field, nested string) bool {
	parts := strings.Split(field, ".")
	for i := 1; i < len(parts); i++ {
		prefix := strings.Join(parts[:i], ".")
		if fm := fieldMapping(mappings, prefix); fm != nil && fm["type"] == "nested" && prefix != nested {
			return false
		}
	}
	return true
}

// fieldEquals reports whether the field holds one of want.
func (s *Server) fieldEquals(ix *index, fields map[string]any, field string, want []any, nested string) (bool, *apiError) {
	if !reachable(ix.mappings, field, nested) {
		return false, nil
	}
	fm := fieldMapping(ix.mappings, field)
	typ := ""
	if fm != nil {
		typ, _ = fm["type"].(string)
	}
	have := values(ix.mappings, fields, field)
	for _, w := range want {
		for _, h := range have {
			switch typ {
			case "long":
				a, ok1 := asInt64(h)
				b, ok2 := asInt64(w)
				if ok1 && ok2 && a == b {
					return true, nil
				}
			case "keyword", "":
				if keywordString(h) == keywordString(w) {
					return true, nil
				}
			default:
				return false, s.unsupportedfLocked("term query on %s field %s", typ, field)
			}
		}
	}
	return false, nil
}

func (s *Server) inRange(ix *index, fields map[string]any, field string, rq types.RangeQuery, nested string) (bool, *apiError) {
	u := rq.(*types.UntypedRangeQuery) // checked by checkQuery
	fm := fieldMapping(ix.mappings, field)
	if fm == nil || fm["type"] != "long" {
		return false, s.unsupportedfLocked("range on field %s that is not a mapped long", field)
	}
	if !reachable(ix.mappings, field, nested) {
		return false, nil
	}
	bound := func(raw json.RawMessage) (int64, bool, *apiError) {
		if len(raw) == 0 || string(raw) == "null" {
			return 0, false, nil
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var v any
		_ = d.Decode(&v)
		n, ok := asInt64(v)
		if !ok {
			return 0, false, errorf(http.StatusBadRequest, "number_format_exception", "For input string: %s", raw)
		}
		return n, true, nil
	}
	for _, h := range values(ix.mappings, fields, field) {
		x, ok := asInt64(h)
		if !ok {
			continue
		}
		in := true
		for _, c := range []struct {
			raw json.RawMessage
			ok  func(b int64) bool
		}{
			{u.Gt, func(b int64) bool { return x > b }},
			{u.Gte, func(b int64) bool { return x >= b }},
			{u.Lt, func(b int64) bool { return x < b }},
			{u.Lte, func(b int64) bool { return x <= b }},
		} {
			b, set, err := bound(c.raw)
			if err != nil {
				return false, err
			}
			if set && !c.ok(b) {
				in = false
			}
		}
		if in {
			return true, nil
		}
	}
	return false, nil
}

// sortField is one field of a sort.
type sortField struct {
	field string
	desc  bool
	long  bool
}

func (s *Server) parseSort(list []types.SortCombinations) ([]sortField, *apiError) {
	var out []sortField
	for _, c := range list {
		switch v := c.(type) {
		case string:
			out = append(out, sortField{field: v})
		case map[string]any:
			if len(v) != 1 {
				return nil, s.unsupportedfLocked("sort %v", v)
			}
			for f, o := range v {
				var order string
				switch x := o.(type) {
				case string:
					order = x
				case map[string]any:
					if len(x) != 1 || x["order"] == nil {
						return nil, s.unsupportedfLocked("sort options %v", x)
					}
					order, _ = x["order"].(string)
				}
				if order != "asc" && order != "desc" {
					return nil, errorf(http.StatusBadRequest, "x_content_parse_exception", "unknown sort order %v", o)
				}
				out = append(out, sortField{field: f, desc: order == "desc"})
			}
		default:
			return nil, s.unsupportedfLocked("sort %T", c)
		}
	}
	return out, nil
}

func sortHits(hits []hit, sorts []sortField) {
	if len(sorts) == 0 {
		sort.Slice(hits, func(i, j int) bool {
			if hits[i].index.name != hits[j].index.name {
				return hits[i].index.name < hits[j].index.name
			}
			return hits[i].doc.seq < hits[j].doc.seq
		})
		return
	}
	for i := range sorts {
		for _, h := range hits {
			if fm := fieldMapping(h.index.mappings, sorts[i].field); fm != nil && fm["type"] == "long" {
				sorts[i].long = true
			}
		}
	}
	keyed := make([]struct {
		h    hit
		keys []any
	}, len(hits))
	for i, h := range hits {
		keyed[i].h, keyed[i].keys = h, sortKeys(h, sorts)
	}
	sort.SliceStable(keyed, func(i, j int) bool {
		return compareKeys(keyed[i].keys, keyed[j].keys, sorts) < 0
	})
	for i := range keyed {
		hits[i] = keyed[i].h
	}
}

// sortKeys are the sort values of a hit, as Elasticsearch returns them.
func sortKeys(h hit, sorts []sortField) []any {
	keys := make([]any, len(sorts))
	for i, sf := range sorts {
		vs := values(h.index.mappings, h.doc.fields, sf.field)
		if len(vs) == 0 {
			keys[i] = nil
			continue
		}
		if sf.long {
			n, _ := asInt64(vs[0])
			keys[i] = json.Number(fmt.Sprint(n))
		} else {
			keys[i] = keywordString(vs[0])
		}
	}
	return keys
}

func normalizeAfter(after []any, sorts []sortField) []any {
	out := make([]any, len(after))
	for i, a := range after {
		if sorts[i].long {
			n, _ := asInt64(a)
			out[i] = json.Number(fmt.Sprint(n))
		} else {
			out[i] = keywordString(a)
		}
	}
	return out
}

// compareKeys orders two sort key tuples; missing values sort last.
func compareKeys(a, b []any, sorts []sortField) int {
	for i, sf := range sorts {
		x, y := a[i], b[i]
		if x == nil || y == nil {
			if x == nil && y == nil {
				continue
			}
			if x == nil {
				return 1
			}
			return -1
		}
		c := 0
		if sf.long {
			m, _ := asInt64(x)
			n, _ := asInt64(y)
			switch {
			case m < n:
				c = -1
			case m > n:
				c = 1
			}
		} else {
			c = strings.Compare(keywordString(x), keywordString(y))
		}
		if sf.desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

// aggregate computes the aggregations over the hits.
func (s *Server) aggregate(aggs map[string]types.Aggregations, hits []hit) (map[string]any, *apiError) {
	out := map[string]any{}
	for name, a := range aggs {
		if bad := unsupportedFields(&a, "Terms", "Max", "Aggregations"); len(bad) > 0 {
			return nil, s.unsupportedfLocked("aggregation %s: %v", name, bad)
		}
		switch {
		case a.Terms != nil:
			r, err := s.termsAgg(a.Terms, a.Aggregations, hits)
			if err != nil {
				return nil, err
			}
			out[name] = r
		case a.Max != nil:
			if len(a.Aggregations) > 0 {
				return nil, errorf(http.StatusBadRequest, "aggregation_initialization_exception", "Aggregator [%s] of type [max] cannot accept sub-aggregations", name)
			}
			if bad := unsupportedFields(a.Max, "Field"); len(bad) > 0 || a.Max.Field == nil {
				return nil, s.unsupportedfLocked("max options %v", bad)
			}
			var max *float64
			for _, h := range hits {
				fm := fieldMapping(h.index.mappings, *a.Max.Field)
				if fm == nil || fm["type"] != "long" {
					return nil, s.unsupportedfLocked("max on field %s that is not a mapped long", *a.Max.Field)
				}
				for _, v := range values(h.index.mappings, h.doc.fields, *a.Max.Field) {
					n, _ := asInt64(v)
					// Metric aggregations compute in doubles.
					f := float64(n)
					if max == nil || f > *max {
						max = &f
					}
				}
			}
			out[name] = map[string]any{"value": max}
		default:
			return nil, s.unsupportedfLocked("aggregation %s without a type", name)
		}
	}
	return out, nil
}

type bucket struct {
	key  string
	hits []hit
	subs map[string]any
}

func (s *Server) termsAgg(t *types.TermsAggregation, subAggs map[string]types.Aggregations, hits []hit) (any, *apiError) {
	if bad := unsupportedFields(t, "Field", "Size", "Order"); len(bad) > 0 || t.Field == nil {
		return nil, s.unsupportedfLocked("terms aggregation options %v", bad)
	}
	field := *t.Field
	byKey := map[string]*bucket{}
	for _, h := range hits {
		fm := fieldMapping(h.index.mappings, field)
		if fm == nil || fm["type"] != "keyword" {
			return nil, s.unsupportedfLocked("terms aggregation on field %s that is not a mapped keyword", field)
		}
		seen := map[string]bool{}
		for _, v := range values(h.index.mappings, h.doc.fields, field) {
			k := keywordString(v)
			if seen[k] {
				continue
			}
			seen[k] = true
			b, ok := byKey[k]
			if !ok {
				b = &bucket{key: k}
				byKey[k] = b
			}
			b.hits = append(b.hits, h)
		}
	}
	buckets := make([]*bucket, 0, len(byKey))
	for _, b := range byKey {
		if len(subAggs) > 0 {
			subs, err := s.aggregate(subAggs, b.hits)
			if err != nil {
				return nil, err
			}
			b.subs = subs
		}
		buckets = append(buckets, b)
	}
	type order struct {
		by   string
		desc bool
	}
	var orders []order
	addOrder := func(m map[string]sortorder.SortOrder) {
		for k, v := range m {
			orders = append(orders, order{k, v == sortorder.Desc})
		}
	}
	switch o := t.Order.(type) {
	case nil:
		orders = []order{{"_count", true}}
	case map[string]sortorder.SortOrder:
		if len(o) != 1 {
			return nil, s.unsupportedfLocked("terms order with %d keys in one object", len(o))
		}
		addOrder(o)
	case []map[string]sortorder.SortOrder:
		for _, m := range o {
			if len(m) != 1 {
				return nil, s.unsupportedfLocked("terms order with %d keys in one object", len(m))
			}
			addOrder(m)
		}
	default:
		return nil, s.unsupportedfLocked("terms order %T", o)
	}
	for _, o := range orders {
		if o.by == "_key" || o.by == "_count" {
			continue
		}
		if sa, ok := subAggs[o.by]; !ok || sa.Max == nil {
			return nil, errorf(http.StatusBadRequest, "aggregation_execution_exception", "Invalid aggregator order path [%s]", o.by)
		}
	}
	metric := func(b *bucket, name string) float64 {
		v := b.subs[name].(map[string]any)["value"].(*float64)
		if v == nil {
			return 0
		}
		return *v
	}
	sort.SliceStable(buckets, func(i, j int) bool {
		a, b := buckets[i], buckets[j]
		for _, o := range orders {
			c := 0
			switch o.by {
			case "_key":
				c = strings.Compare(a.key, b.key)
			case "_count":
				c = len(a.hits) - len(b.hits)
			default:
				x, y := metric(a, o.by), metric(b, o.by)
				switch {
				case x < y:
					c = -1
				case x > y:
					c = 1
				}
			}
			if o.desc {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		// Elasticsearch breaks remaining ties by key, ascending.
		return a.key < b.key
	})
	size := 10
	if t.Size != nil {
		size = *t.Size
	}
	if size < 1 {
		return nil, errorf(http.StatusBadRequest, "illegal_argument_exception", "[size] must be greater than 0. Found [%d] in [terms]", size)
	}
	other := 0
	if len(buckets) > size {
		for _, b := range buckets[size:] {
			other += len(b.hits)
		}
		buckets = buckets[:size]
	}
	out := make([]any, 0, len(buckets))
	for _, b := range buckets {
		e := map[string]any{"key": b.key, "doc_count": len(b.hits)}
		for k, v := range b.subs {
			e[k] = v
		}
		out = append(out, e)
	}
	return map[string]any{"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": out}, nil
}
