package estest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type index struct {
	name     string
	mappings map[string]any // nil: dynamic, no template matched
	docs     map[string]*doc
}

type doc struct {
	id      string
	raw     json.RawMessage
	fields  map[string]any // decoded with json.Number
	version int64
	seq     int64
}

// parseDoc decodes a document's fields, leaving out the top-level objects
// mapped with enabled: false (nothing can query them; a large fake holds
// many documents). They are still checked to be valid JSON.
func parseDoc(mappings map[string]any, b []byte) (map[string]any, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	if top == nil {
		return nil, fmt.Errorf("not an object")
	}
	props, _ := mappings["properties"].(map[string]any)
	m := make(map[string]any, len(top))
	for k, raw := range top {
		if fm, ok := props[k].(map[string]any); ok && fm["enabled"] == false {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// validate checks a document against mappings as Elasticsearch would:
// unknown fields under dynamic: strict are rejected, values must parse as
// their field's type.
func validate(mappings map[string]any, d map[string]any) *apiError {
	if mappings == nil {
		return nil
	}
	return validateObject(mappings, d, "")
}

func validateObject(m map[string]any, obj map[string]any, prefix string) *apiError {
	props, _ := m["properties"].(map[string]any)
	strict := m["dynamic"] == "strict"
	for k, v := range obj {
		name := prefix + k
		fm, ok := props[k].(map[string]any)
		if !ok {
			if strict {
				return errorf(http.StatusBadRequest, "strict_dynamic_mapping_exception",
					"[1:2] mapping set to strict, dynamic introduction of [%s] within [%s] is not allowed", k, strings.TrimSuffix(prefix, "."))
			}
			continue
		}
		if err := validateField(fm, v, name); err != nil {
			return err
		}
	}
	return nil
}

func validateField(fm map[string]any, v any, name string) *apiError {
	if v == nil {
		return nil
	}
	if arr, ok := v.([]any); ok {
		for _, e := range arr {
			if err := validateField(fm, e, name); err != nil {
				return err
			}
		}
		return nil
	}
	typ, _ := fm["type"].(string)
	if typ == "" {
		typ = "object"
	}
	bad := func(why string) *apiError {
		return errorf(http.StatusBadRequest, "document_parsing_exception",
			"[1:2] failed to parse field [%s] of type [%s] in document: %s", name, typ, why)
	}
	switch typ {
	case "object", "nested":
		if fm["enabled"] == false {
			return nil
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return errorf(http.StatusBadRequest, "document_parsing_exception",
				"object mapping for [%s] tried to parse field [%s] as object, but found a concrete value", name, name)
		}
		return validateObject(fm, obj, name+".")
	case "keyword":
		switch v.(type) {
		case string, json.Number, bool:
			return nil
		}
		return bad("a keyword takes a string, number or boolean")
	case "long":
		if _, ok := asInt64(v); !ok {
			return bad(fmt.Sprintf("value [%v] is not a long", v))
		}
	case "date_nanos", "date":
		switch x := v.(type) {
		case json.Number:
			if _, err := x.Int64(); err != nil {
				return bad("not epoch milliseconds")
			}
		case string:
			if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
				return bad(fmt.Sprintf("failed to parse date field [%s]", x))
			}
		default:
			return bad("not a date")
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad("not a boolean")
		}
	default:
		return errorf(http.StatusBadRequest, "estest_unsupported_exception", "not implemented by estest: field type %q of [%s]", typ, name)
	}
	return nil
}

// asInt64 reads a long as Elasticsearch would: an integral JSON number or a
// string holding one.
func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		return n, err == nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	case float64:
		if x == float64(int64(x)) {
			return int64(x), true
		}
	case int64:
		return x, true
	case int:
		return int64(x), true
	}
	return 0, false
}

// fieldMapping returns the mapping of a dotted field path, or nil.
func fieldMapping(mappings map[string]any, field string) map[string]any {
	m := mappings
	for _, part := range strings.Split(field, ".") {
		props, _ := m["properties"].(map[string]any)
		next, ok := props[part].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

// values returns the indexed values of a dotted field in a document,
// arrays flattened; values above a keyword's ignore_above are not indexed.
func values(mappings map[string]any, d map[string]any, field string) []any {
	var cur []any = []any{d}
	for _, part := range strings.Split(field, ".") {
		var next []any
		for _, c := range cur {
			obj, ok := c.(map[string]any)
			if !ok {
				continue
			}
			switch v := obj[part].(type) {
			case nil:
			case []any:
				next = append(next, v...)
			default:
				next = append(next, v)
			}
		}
		cur = next
	}
	fm := fieldMapping(mappings, field)
	if fm != nil && fm["type"] == "keyword" {
		limit, hasLimit := asInt64(fm["ignore_above"])
		var out []any
		for _, v := range cur {
			s := keywordString(v)
			if hasLimit && int64(len([]rune(s))) > limit {
				continue
			}
			out = append(out, s)
		}
		return out
	}
	return cur
}

// keywordString is how a keyword field indexes a JSON value.
func keywordString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return string(x)
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
