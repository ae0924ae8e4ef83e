package collector

import (
	"context"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

func openTestDB(t testing.TB, series ...labels.Labels) *tsdb.DB {
	t.Helper()
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app := db.Appender(context.Background())
	for i, s := range series {
		if _, err := app.Append(0, s, 1000, float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return db
}

func selectAll(t *testing.T, q storage.Querier, sorted bool, ms ...*labels.Matcher) []string {
	t.Helper()
	ss := q.Select(context.Background(), sorted, nil, ms...)
	var out []string
	for ss.Next() {
		out = append(out, ss.At().Labels().String())
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestExternalLabelsQueryable(t *testing.T) {
	db := openTestDB(t,
		labels.FromStrings("__name__", "up", "job", "a"),
		labels.FromStrings("__name__", "up", "job", "b", "cluster", "west"), // its own label wins
		labels.FromStrings("__name__", "up", "b", "1"),
	)
	q, err := newExternalLabelsQueryable(db, labels.FromStrings("cluster", "east")).Querier(0, 2000)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	m := func(t labels.MatchType, n, v string) *labels.Matcher { return labels.MustNewMatcher(t, n, v) }

	for _, tc := range []struct {
		name string
		ms   []*labels.Matcher
		want []string
	}{
		{"all, sorted after attaching", []*labels.Matcher{m(labels.MatchEqual, "__name__", "up")}, []string{
			`{__name__="up", b="1", cluster="east"}`,
			`{__name__="up", cluster="east", job="a"}`,
			`{__name__="up", cluster="west", job="b"}`,
		}},
		{"external value", []*labels.Matcher{m(labels.MatchEqual, "cluster", "east")}, []string{
			`{__name__="up", b="1", cluster="east"}`,
			`{__name__="up", cluster="east", job="a"}`,
		}},
		{"own value", []*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchEqual, "cluster", "west")}, []string{
			`{__name__="up", cluster="west", job="b"}`,
		}},
		{"negative", []*labels.Matcher{m(labels.MatchEqual, "job", "a"), m(labels.MatchNotEqual, "cluster", "east")}, nil},
		{"regexp over both", []*labels.Matcher{m(labels.MatchRegexp, "cluster", "e.*|w.*"), m(labels.MatchEqual, "job", "b")}, []string{
			`{__name__="up", cluster="west", job="b"}`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := selectAll(t, q, true, tc.ms...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			unsorted := selectAll(t, q, false, tc.ms...)
			slices.Sort(unsorted)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(unsorted, want) {
				t.Errorf("unsorted select got %v, want %v", unsorted, want)
			}
		})
	}

	names, _, err := q.LabelNames(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"__name__", "b", "cluster", "job"}; !slices.Equal(names, want) {
		t.Errorf("label names %v, want %v", names, want)
	}
	vals, _, err := q.LabelValues(context.Background(), "cluster", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"east", "west"}; !slices.Equal(vals, want) {
		t.Errorf("cluster values %v, want %v", vals, want)
	}
	vals, _, err = q.LabelValues(context.Background(), "job", nil, m(labels.MatchEqual, "cluster", "east"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a"}; !slices.Equal(vals, want) {
		t.Errorf("job values in east %v, want %v", vals, want)
	}
	names, _, err = q.LabelNames(context.Background(), nil, m(labels.MatchEqual, "cluster", "west"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"__name__", "cluster", "job"}; !slices.Equal(names, want) {
		t.Errorf("label names in west %v, want %v", names, want)
	}
}

// A series stored without the cluster label and the same series stored with
// the collector's own cluster value are one series once the label is
// attached: they are merged, not served twice.
func TestExternalLabelsMergeIdenticalSeries(t *testing.T) {
	db := openTestDB(t,
		labels.FromStrings("__name__", "x", "job", "a"),
		labels.FromStrings("__name__", "x", "job", "a", "cluster", "east"),
		labels.FromStrings("__name__", "x", "job", "b"),
	)
	q, err := newExternalLabelsQueryable(db, labels.FromStrings("cluster", "east")).Querier(0, 2000)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, sorted := range []bool{true, false} {
		got := selectAll(t, q, sorted, labels.MustNewMatcher(labels.MatchEqual, "__name__", "x"))
		want := []string{`{__name__="x", cluster="east", job="a"}`, `{__name__="x", cluster="east", job="b"}`}
		if !slices.Equal(got, want) {
			t.Errorf("sorted=%v: got %v, want %v", sorted, got, want)
		}
	}
	// The merged series reads both stored ones.
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "job", "a"))
	for ss.Next() {
		it := ss.At().Iterator(nil)
		n := 0
		for it.Next() != chunkenc.ValNone {
			n++
		}
		if n != 1 {
			t.Errorf("merged series has %d samples at one timestamp, want 1", n)
		}
	}
}

// TestUnattached: without the external labels attached, the same series
// are selected (matchers on external label names decided against their
// values), and none is offered once a stored series has such a label.
func TestUnattached(t *testing.T) {
	m := func(t labels.MatchType, n, v string) *labels.Matcher { return labels.MustNewMatcher(t, n, v) }
	db := openTestDB(t,
		labels.FromStrings("__name__", "up", "job", "a"),
		labels.FromStrings("__name__", "up", "job", "b"),
		labels.FromStrings("__name__", "x", "job", "a"),
	)
	eq := newExternalLabelsQueryable(db, labels.FromStrings("cluster", "east", "zone", "z"))
	uq, ok := eq.unattached(context.Background())
	if !ok {
		t.Fatal("no stored series has cluster or zone, yet not offered")
	}
	q, err := uq.Querier(0, 2000)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, tc := range []struct {
		ms   []*labels.Matcher
		want []string
	}{
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up")}, []string{`{__name__="up", job="a"}`, `{__name__="up", job="b"}`}},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchEqual, "cluster", "east")}, []string{`{__name__="up", job="a"}`, `{__name__="up", job="b"}`}},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchRegexp, "zone", "z|y"), m(labels.MatchEqual, "job", "b")}, []string{`{__name__="up", job="b"}`}},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchEqual, "cluster", "west")}, nil},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchEqual, "cluster", "")}, nil},
		// Only matchers on external labels: every series they let through.
		{[]*labels.Matcher{m(labels.MatchEqual, "cluster", "east")}, []string{`{__name__="up", job="a"}`, `{__name__="up", job="b"}`, `{__name__="x", job="a"}`}},
	} {
		got := selectAll(t, q, true, tc.ms...)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.ms, got, tc.want)
		}
	}

	collides := newExternalLabelsQueryable(openTestDB(t,
		labels.FromStrings("__name__", "up", "job", "a"),
		labels.FromStrings("__name__", "up", "job", "b", "zone", "own"),
	), labels.FromStrings("cluster", "east", "zone", "z"))
	if _, ok := collides.unattached(context.Background()); ok {
		t.Error("a stored series has zone, yet unattached is offered")
	}
}
