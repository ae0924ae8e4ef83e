package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// dropLabel removes name=value from the metric of every series of a
// decoded vector or matrix result and reports, per series, whether it was
// there. A different value is left in place, so that it shows in a diff.
func dropLabel(result any, name, value string) (present []bool) {
	items, ok := result.([]any)
	if !ok {
		return nil
	}
	for _, it := range items {
		m, _ := it.(map[string]any)
		metric, _ := m["metric"].(map[string]any)
		if v, ok := metric[name]; ok && v == value {
			delete(metric, name)
			present = append(present, true)
		} else {
			present = append(present, false)
		}
	}
	return present
}

func decodeUseNumber(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func canonical(v any) string {
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

// sortSeries orders a vector or matrix result by its series' labels.
func sortSeries(result any) {
	items, ok := result.([]any)
	if !ok {
		return
	}
	sort.SliceStable(items, func(i, j int) bool {
		mi, _ := items[i].(map[string]any)
		mj, _ := items[j].(map[string]any)
		return canonical(mi["metric"]) < canonical(mj["metric"])
	})
}

// resultDiff compares two API answers, the collector's (got) against the
// reference's (want), after removing the collector's external label
// cluster=<cluster> from got. It returns a description of the first
// differences, empty when equal, and per series of got whether it carried
// the cluster label.
func resultDiff(got, want *Response, cluster string, ordered bool) (diff string, clusterPresent []bool) {
	var b strings.Builder
	if got.Status != want.Status || got.ErrorType != want.ErrorType || got.Error != want.Error {
		fmt.Fprintf(&b, "status: got %s %s %q (HTTP %d), want %s %s %q (HTTP %d)\n",
			got.Status, got.ErrorType, got.Error, got.HTTPStatus, want.Status, want.ErrorType, want.Error, want.HTTPStatus)
		return b.String(), nil
	}
	if !reflect.DeepEqual(sorted(got.Warnings), sorted(want.Warnings)) {
		fmt.Fprintf(&b, "warnings: got %q, want %q\n", got.Warnings, want.Warnings)
	}
	if !reflect.DeepEqual(sorted(got.Infos), sorted(want.Infos)) {
		fmt.Fprintf(&b, "infos: got %q, want %q\n", got.Infos, want.Infos)
	}
	if want.Status != "success" {
		return b.String(), nil
	}
	var gd, wd QueryData
	if err := json.Unmarshal(got.Data, &gd); err != nil {
		return fmt.Sprintf("collector data: %v", err), nil
	}
	if err := json.Unmarshal(want.Data, &wd); err != nil {
		return fmt.Sprintf("reference data: %v", err), nil
	}
	if gd.ResultType != wd.ResultType {
		fmt.Fprintf(&b, "result type: got %s, want %s\n", gd.ResultType, wd.ResultType)
		return b.String(), nil
	}
	gr, err := decodeUseNumber(gd.Result)
	if err != nil {
		return fmt.Sprintf("collector result: %v", err), nil
	}
	wr, err := decodeUseNumber(wd.Result)
	if err != nil {
		return fmt.Sprintf("reference result: %v", err), nil
	}
	clusterPresent = dropLabel(gr, "cluster", cluster)
	if !ordered {
		// clusterPresent stays in the collector's order; callers only
		// look at all-or-none.
		sortSeries(gr)
		sortSeries(wr)
	}
	if reflect.DeepEqual(gr, wr) {
		return b.String(), clusterPresent
	}
	gi, gok := gr.([]any)
	wi, wok := wr.([]any)
	if !gok || !wok {
		fmt.Fprintf(&b, "result:\n  got  %s\n  want %s\n", trunc(canonical(gr)), trunc(canonical(wr)))
		return b.String(), clusterPresent
	}
	if len(gi) != len(wi) {
		fmt.Fprintf(&b, "%d series, want %d\n", len(gi), len(wi))
	}
	shown := 0
	for i := 0; i < max(len(gi), len(wi)) && shown < 4; i++ {
		var g, w string
		if i < len(gi) {
			g = canonical(gi[i])
		}
		if i < len(wi) {
			w = canonical(wi[i])
		}
		if g != w {
			fmt.Fprintf(&b, "series %d:\n  got  %s\n  want %s\n", i, trunc(g), trunc(w))
			shown++
		}
	}
	return b.String(), clusterPresent
}

func sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func trunc(s string) string {
	if len(s) > 600 {
		return s[:600] + "…"
	}
	return s
}

// seriesLabelSets returns the label sets of a vector or matrix answer
// (without cluster=<cluster>), sorted, as canonical strings.
func seriesLabelSets(t testing.TB, r *Response, cluster string) []string {
	t.Helper()
	if r.Status != "success" {
		t.Fatalf("query failed: HTTP %d %s: %s", r.HTTPStatus, r.ErrorType, r.Error)
	}
	var d QueryData
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatal(err)
	}
	v, err := decodeUseNumber(d.Result)
	if err != nil {
		t.Fatal(err)
	}
	dropLabel(v, "cluster", cluster)
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, it := range items {
		m, _ := it.(map[string]any)
		out = append(out, canonical(m["metric"]))
	}
	sort.Strings(out)
	return out
}

// metricsAsItems turns the data of /api/v1/series (a list of label maps)
// into the items of a vector result, joined by commas.
func metricsAsItems(t testing.TB, data []byte) string {
	t.Helper()
	var sets []map[string]string
	if err := json.Unmarshal(data, &sets); err != nil {
		t.Fatal(err)
	}
	parts := make([]string, 0, len(sets))
	for _, s := range sets {
		b, _ := json.Marshal(map[string]any{"metric": s, "value": []any{0, "0"}})
		parts = append(parts, string(b))
	}
	return strings.Join(parts, ",")
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
