package federation

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	thanosprompb "github.com/thanos-io/thanos/pkg/store/storepb/prompb"
)

// TestEncodedAnswers: an instant query whose answer is the leaves' answers
// (a selector, a function of each series) is encoded as the leaves' answers
// come, and the API's JSON is the same as when the federator evaluates the
// answers (with stats asked for), as without push-down, and as the
// reference's: floats, NaN, native histograms, the metric name kept or
// dropped; a limit, stats, and --query.max-samples behave as Prometheus'.
func TestEncodedAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two collectors and three federators")
	}
	data := map[string][]testSeries{}
	var addrs []string
	for i, cluster := range []string{"east", "west"} {
		w := workload(float64(i + 1))
		w = append(w, testSeries{lset: labels.FromStrings("__name__", "odd", "job", "x"), samples: []sample{{ts(38), math.NaN()}, {ts(39), math.Inf(-1)}}})
		rc := startCollector(t, cluster)
		rc.write(t, w)
		writeNativeHistogram(t, rc, float64(i+1))
		data["cluster="+cluster] = w
		addrs = append(addrs, rc.c.GRPCAddr())
	}
	ref := newReference(t, data)
	push := startFederator(t, testOptions(addrs...))
	pullOpts := testOptions(addrs...)
	pullOpts.PushDown = false
	pull := startFederator(t, pullOpts)

	for _, q := range []string{
		`http_requests_total`,
		`http_requests_total{cluster="east", code="500"}`,
		`rate(http_requests_total[5m])`,
		`{__name__=~"http_.*", instance="a:9100"}`,
		`odd`,
		`(odd)`,
		`label_replace(up, "host", "$1", "instance", "(.*):.*")`,
		`http_requests_total offset 1m`,
		`native_latency_seconds`,
		`native_latency_seconds * 2`,
		`nothing_like_this`,
	} {
		encoded := get(t, push.url, "/api/v1/query", instant(q))
		mustSucceed(t, q, encoded)
		withStats := instant(q)
		withStats.Set("stats", "all")
		evaluated := get(t, push.url, "/api/v1/query", withStats)
		mustSucceed(t, q+" with stats", evaluated)
		if len(evaluated.Data) == 0 || !strings.Contains(string(evaluated.Data), `"stats"`) {
			t.Errorf("%s: no stats in %s", q, evaluated.Data)
		}
		pulled := get(t, pull.url, "/api/v1/query", instant(q))
		mustSucceed(t, q+" without push-down", pulled)
		got := normalized(encoded.Data)
		for what, other := range map[string]string{
			"evaluated":         normalized(evaluated.Data),
			"without push-down": normalized(pulled.Data),
		} {
			if got != other {
				t.Errorf("%s: encoded\n%s\n%s\n%s", q, got, what, other)
			}
		}
		// The reference holds the float series only.
		if !strings.Contains(q, "native") {
			if want := normalized(ref.data(t, instant(q))); got != want {
				t.Errorf("%s: encoded\n%s\nreference\n%s", q, got, want)
			}
		}
		if !strings.Contains(q, "nothing") && len(encoded.result(t).Result) == 0 {
			t.Errorf("%s: empty answer", q)
		}
	}

	// The encoded path is the one taken for these queries, and only when
	// the caller asks for it.
	at := time.UnixMilli(queryTime.UnixMilli())
	for _, tc := range []struct {
		q       string
		ctx     context.Context
		encoded bool
	}{
		{`http_requests_total`, withEncodedResult(context.Background()), true},
		{`rate(http_requests_total[5m])`, withEncodedResult(context.Background()), true},
		{`http_requests_total`, context.Background(), false},
		{`sum(http_requests_total)`, withEncodedResult(context.Background()), false},
		{`http_requests_total + 1 > 0`, withEncodedResult(context.Background()), true},
		{`http_requests_total > on (cluster) group_left sum by (cluster) (up)`, withEncodedResult(context.Background()), false},
	} {
		qry, err := push.f.Engine().NewInstantQuery(tc.ctx, push.f.Queryable(), nil, tc.q, at)
		if err != nil {
			t.Fatal(err)
		}
		res := qry.Exec(tc.ctx)
		qry.Close()
		if res.Err != nil {
			t.Fatalf("%s: %v", tc.q, res.Err)
		}
		if _, ok := res.Value.(encodedVector); ok != tc.encoded {
			t.Errorf("%s: answered as %T, want encoded %v", tc.q, res.Value, tc.encoded)
		}
	}
	if v := testutil.ToFloat64(push.f.engine.outcomes.WithLabelValues("fallback")); v != 0 {
		t.Errorf("%v expressions fell back to pulling", v)
	}

	// limit truncates as Prometheus' API does (the federator evaluates).
	limited := instant(`http_requests_total`)
	limited.Set("limit", "3")
	r := get(t, push.url, "/api/v1/query", limited)
	if r.code != http.StatusOK || len(r.result(t).Result) != 3 || len(r.Warnings) != 1 || r.Warnings[0] != "results truncated due to limit" {
		t.Errorf("limit=3: %d, %d series, warnings %q", r.code, len(r.result(t).Result), r.Warnings)
	}
	// So does POST, as Grafana sends it.
	if p := post(t, push.url, "/api/v1/query", instant(`odd`)); normalized(p.Data) != normalized(get(t, pull.url, "/api/v1/query", instant(`odd`)).Data) {
		t.Errorf("POST odd: %s", p.Data)
	}

	// Over --query.max-samples: Prometheus' error, as without push-down
	// (8 series of http_requests_total, a limit of 7).
	for _, pushDown := range []bool{true, false} {
		opts := testOptions(addrs...)
		opts.QueryMaxSamples = 7
		opts.PushDown = pushDown
		f := startFederator(t, opts)
		r := get(t, f.url, "/api/v1/query", instant(`http_requests_total`))
		if r.code != http.StatusUnprocessableEntity || r.ErrorType != "execution" || r.Error != "query processing would load too many samples into memory in query execution" {
			t.Errorf("push-down %v, over the sample limit: %d %s %q", pushDown, r.code, r.ErrorType, r.Error)
		}
		mustSucceed(t, "under the sample limit", get(t, f.url, "/api/v1/query", instant(`http_requests_total{code="500"}`)))
	}
}

// writeNativeHistogram remote-writes one native histogram series,
// native_latency_seconds, over the workload's ten minutes.
func writeNativeHistogram(t *testing.T, rc *realCollector, seed float64) {
	t.Helper()
	s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "native_latency_seconds"}, {Name: "job", Value: "api"}}}
	for i := 0; i <= 40; i++ {
		n := uint64(float64(i) * seed * 10)
		zero, b1 := n/10, n/2
		b2 := n - zero - b1
		h := &histogram.Histogram{
			Count: n, ZeroCount: zero, Sum: float64(n) * 0.25, Schema: 0, ZeroThreshold: 0.001,
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: []int64{int64(b1), int64(b2) - int64(b1)}, // deltas
		}
		s.Histograms = append(s.Histograms, prompb.FromIntHistogram(ts(i), h))
	}
	rc.writeSeries(t, []prompb.TimeSeries{s})
}

// TestEncodeSamples: what encodeSamples keeps of a leaf's answer, as the
// engine would select it at the query time.
func TestEncodeSamples(t *testing.T) {
	const at = 1000
	lset := func(v string) []labelpb.ZLabel {
		return labelpb.ZLabelsFromPromLabels(labels.FromStrings("__name__", "x", "i", v))
	}
	series := []*thanosprompb.TimeSeries{
		{Labels: lset("a"), Samples: []thanosprompb.Sample{{Timestamp: at, Value: 1.5}}},
		{Labels: lset("stale"), Samples: []thanosprompb.Sample{{Timestamp: at, Value: math.Float64frombits(value.StaleNaN)}}},
		{Labels: lset("nan"), Samples: []thanosprompb.Sample{{Timestamp: at, Value: math.NaN()}}},
	}
	out, n, err := encodeSamples(series, at, labels.EmptyLabels())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metric":{"__name__":"x","i":"a"},"value":[1,"1.5"]},{"metric":{"__name__":"x","i":"nan"},"value":[1,"NaN"]}`
	if string(out) != want || n != 2 {
		t.Errorf("got %d samples\n%s\nwant 2\n%s", n, out, want)
	}
	// The labels set above and the federator's own are written in; a
	// series that has one of their names already is not encodable.
	set := labels.FromStrings("region", "r0", "zone", "z")
	withSet, _, err := encodeSamples(series[:1], at, set)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"metric":{"__name__":"x","i":"a","region":"r0","zone":"z"},"value":[1,"1.5"]}`; string(withSet) != want {
		t.Errorf("with labels set: got\n%s\nwant\n%s", withSet, want)
	}
	if _, _, err := encodeSamples(series[:1], at, labels.FromStrings("i", "b")); err != errNotEncodable {
		t.Errorf("a series with a label to set: got %v, want errNotEncodable", err)
	}
	for _, bad := range []*thanosprompb.TimeSeries{
		{Labels: lset("late"), Samples: []thanosprompb.Sample{{Timestamp: at + 1, Value: 1}}},
		{Labels: lset("two"), Samples: []thanosprompb.Sample{{Timestamp: at - 1, Value: 1}, {Timestamp: at, Value: 2}}},
		{Labels: lset("none")},
	} {
		if _, _, err := encodeSamples([]*thanosprompb.TimeSeries{bad}, at, labels.EmptyLabels()); err != errNotEncodable {
			t.Errorf("%s: got %v, want errNotEncodable", bad.Labels, err)
		}
	}
	// The pieces join into the vector the API writes.
	v := encodedVector{parts: [][]byte{nil, out, nil, []byte(`{"metric":{},"value":[1,"2"]}`)}}
	b, err := v.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `[` + want + `,{"metric":{},"value":[1,"2"]}]`; string(b) != want {
		t.Errorf("joined\n%s\nwant\n%s", b, want)
	}
	if b, _ := (encodedVector{}).MarshalJSON(); string(b) != `[]` {
		t.Errorf("empty: %s", b)
	}
}

// TestEncodedCodec: the API's answer with an encoded vector spliced in is
// byte for byte what Prometheus' JSON codec writes for it, warnings and
// infos included; other answers are the codec's own.
func TestEncodedCodec(t *testing.T) {
	v := encodedVector{parts: [][]byte{[]byte(`{"metric":{"a":"\"result\":[]"},"value":[1,"2"]}`), nil, []byte(`{"metric":{},"value":[1,"3"]}`)}, samples: 2}
	for _, resp := range []*apiv1.Response{
		{Status: "success", Data: &apiv1.QueryData{ResultType: v.Type(), Result: v}},
		{Status: "success", Data: &apiv1.QueryData{ResultType: v.Type(), Result: v}, Warnings: []string{`"result":[] in a warning`}, Infos: []string{"i"}},
		{Status: "success", Data: &apiv1.QueryData{ResultType: v.Type(), Result: encodedVector{}}},
		{Status: "success", Data: []string{"a", "b"}},
		{Status: "error", ErrorType: "bad_data", Error: "no"},
	} {
		want, err := apiv1.JSONCodec{}.Encode(resp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodedCodec{}.Encode(resp)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
	}
}

// TestEncodedCascade: through a cascade, an answer made of the leaves'
// JSON passes each level as it is. A region asks its collectors to write
// in the labels set above and its own (pushdown.Request.SetLabels), and
// passes their JSON on; a federator with --label encodes its answer
// likewise. The answers equal those without push-down at every level.
// Where a collector stores series with a label of the region's name,
// which the region's label replaces, the collector refuses and the region
// answers the general way, equally.
func TestEncodedCascade(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two collectors and five federators")
	}
	var regions, pulled []string
	var regionFeds, pulledFeds []*testFederator
	for i, cluster := range []string{"east", "west"} {
		w := workload(float64(i + 1))
		if cluster == "east" {
			// Series of its own with a label of the region's name.
			for _, s := range w {
				if s.lset.Get("code") == "200" {
					w = append(w, testSeries{lset: labels.NewBuilder(s.lset).Set("region", "stored").Set("instance", "other:1").Labels(), samples: s.samples})
				}
			}
		}
		rc := startCollector(t, cluster)
		rc.write(t, w)
		opts := testOptions(rc.c.GRPCAddr())
		opts.ExternalLabels = labels.FromStrings("region", "r"+strconv.Itoa(i))
		region := startFederator(t, opts)
		regionFeds = append(regionFeds, region)
		regions = append(regions, region.f.GRPCAddr())
		opts.PushDown = false
		pulledFeds = append(pulledFeds, startFederator(t, opts))
		pulled = append(pulled, pulledFeds[i].f.GRPCAddr())
	}
	global := startFederator(t, testOptions(regions...))
	pullOpts := testOptions(pulled...)
	pullOpts.PushDown = false
	globalPull := startFederator(t, pullOpts)

	for _, q := range []string{
		`http_requests_total`,
		`http_requests_total{code="500"}`,
		`http_requests_total{region="r1"}`,
		`rate(http_requests_total{code="500"}[5m])`,
		`http_requests_total{region="stored"}`,
	} {
		for name, pair := range map[string][2]string{
			"global":    {global.url, globalPull.url},
			"region r0": {regionFeds[0].url, pulledFeds[0].url},
			"region r1": {regionFeds[1].url, pulledFeds[1].url},
		} {
			params := instant(q)
			got, want := get(t, pair[0], "/api/v1/query", params), get(t, pair[1], "/api/v1/query", params)
			mustSucceed(t, name+" "+q, got)
			mustSucceed(t, "without push-down "+q, want)
			if normalized(got.Data) != normalized(want.Data) {
				t.Errorf("%s %s: pushed down\n%s\npulled\n%s", name, params.Get("query"), normalized(got.Data), normalized(want.Data))
			}
			// (The region's label replaces a stored one: nothing is
			// left with region="stored".)
			if name == "global" && !strings.Contains(q, "stored") && len(want.result(t).Result) == 0 {
				t.Errorf("%s %s: empty answer", name, params.Get("query"))
			}
		}
	}

	// The paths taken: the global federator's answer is the regions'
	// JSON; a region asked for JSON with a label set above passes on its
	// collector's, with both labels written in, unless the collector
	// stores series with the region's label name.
	at := time.UnixMilli(queryTime.UnixMilli())
	above := labels.FromStrings("top", "t")
	for _, tc := range []struct {
		name    string
		f       *testFederator
		ctx     context.Context
		q       string
		encoded bool
	}{
		{"global", global, withEncodedResult(context.Background()), `http_requests_total{code="500"}`, true},
		{"region r1", regionFeds[1], withEncodedRelay(context.Background(), above), `http_requests_total{code="500"}`, true},
		{"region r1, no label above", regionFeds[1], withEncodedRelay(context.Background(), labels.EmptyLabels()), `http_requests_total{code="500"}`, true},
		{"region r0, a stored region label", regionFeds[0], withEncodedRelay(context.Background(), above), `http_requests_total`, false},
		{"region r1, a label above that is its own", regionFeds[1], withEncodedRelay(context.Background(), labels.FromStrings("region", "x")), `http_requests_total`, false},
	} {
		qry, err := tc.f.f.Engine().NewInstantQuery(tc.ctx, tc.f.f.Queryable(), nil, tc.q, at)
		if err != nil {
			t.Fatal(err)
		}
		res := qry.Exec(tc.ctx)
		qry.Close()
		if res.Err != nil {
			t.Fatalf("%s: %v", tc.name, res.Err)
		}
		v, ok := res.Value.(encodedVector)
		if ok != tc.encoded {
			t.Errorf("%s: answered as %T, want encoded %v", tc.name, res.Value, tc.encoded)
			continue
		}
		if !ok {
			continue
		}
		b, _ := v.MarshalJSON()
		var samples []struct{ Metric map[string]string }
		if err := json.Unmarshal(b, &samples); err != nil || len(samples) == 0 {
			t.Fatalf("%s: %v, %s", tc.name, err, b)
		}
		for _, s := range samples {
			want := map[string]string{"region": "r1", "cluster": "west"}
			if tc.name == "global" {
				delete(want, "cluster")
			}
			setLabelsFrom(tc.ctx).Range(func(l labels.Label) { want[l.Name] = l.Value })
			for name, value := range want {
				if name == "region" && tc.name == "global" {
					continue
				}
				if s.Metric[name] != value {
					t.Errorf("%s: a sample without %s=%q: %v", tc.name, name, value, s.Metric)
				}
			}
		}
	}
}
