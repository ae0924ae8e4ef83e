package pushdown

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// jsonSender sends through the wire encoding of the gRPC codec and
// decodes as the federator does.
type jsonSender struct {
	t       *testing.T
	samples [][]byte
	n       int
	series  int
	// labelsSet counts the messages that said the labels to set are in.
	labelsSet int
}

func (s *jsonSender) Send(r *querypb.QueryResponse) error {
	if r.GetTimeseriesBatch() != nil {
		s.series += len(r.GetTimeseriesBatch().Series)
	}
	return nil
}

func (s *jsonSender) SendJSON(b []byte, n int, labelsSet bool) error {
	m := &jsonSamples{json: b, n: n, labelsSet: labelsSet}
	buf := make([]byte, m.Size())
	if k, err := m.MarshalToSizedBuffer(buf); err != nil || k != len(buf) {
		s.t.Fatalf("marshal: %d of %d bytes, %v", k, len(buf), err)
	}
	var back Response
	if err := back.Unmarshal(buf); err != nil {
		return err
	}
	if back.GetResult() != nil {
		s.t.Errorf("a JSON message decoded with a result: %v", back.GetResult())
	}
	if back.LabelsSet != labelsSet {
		s.t.Errorf("sent with labels set %v, decoded %v", labelsSet, back.LabelsSet)
	}
	if back.LabelsSet {
		s.labelsSet++
	}
	s.samples = append(s.samples, back.JSON)
	s.n += back.Samples
	return nil
}

// TestServerAnswersJSON: asked for JSON, a leaf sends its instant vector's
// samples as Prometheus' API encodes them, in messages of about
// jsonMessageBytes, counted as the engine counts them; the messages joined
// are the API's vector. A range query's answer is series whatever is
// asked.
func TestServerAnswersJSON(t *testing.T) {
	// Samples of at least 40 bytes: more than one message.
	const n = jsonMessageBytes/40 + 7
	s, h, now := vectorServer(t, n, func(i int) labels.Labels {
		return labels.FromStrings("__name__", "x", "i", strconv.Itoa(i), "q", `a"<b>`)
	}, func(i int) float64 {
		if i == 3 {
			return math.NaN()
		}
		return float64(i) + 0.5
	})
	engine := s.Engine
	_, db := s.Queryable(context.Background(), nil)
	out := &jsonSender{t: t}
	if err := s.Eval(context.Background(), &Request{Query: "x", StartMs: now.UnixMilli(), EncodeJSON: true}, out); err != nil {
		t.Fatal(err)
	}
	if len(out.samples) < 2 || out.series != 0 {
		t.Fatalf("%d JSON messages and %d series, want more than one and 0", len(out.samples), out.series)
	}
	for i, b := range out.samples[:len(out.samples)-1] {
		if len(b) < jsonMessageBytes {
			t.Errorf("message %d of %d holds %d bytes, under %d", i, len(out.samples), len(b), jsonMessageBytes)
		}
	}
	joined := []byte{'['}
	for i, b := range out.samples {
		if i > 0 {
			joined = append(joined, ',')
		}
		joined = append(joined, b...)
	}
	joined = append(joined, ']')

	// What Prometheus' API would write for the same query.
	qry, err := engine.NewInstantQuery(context.Background(), db, nil, "x", now)
	if err != nil {
		t.Fatal(err)
	}
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want, err := apiv1.JSONCodec{}.Encode(&apiv1.Response{Status: "success", Data: res.Value})
	if err != nil {
		t.Fatal(err)
	}
	got, err := apiv1.JSONCodec{}.Encode(&apiv1.Response{Status: "success", Data: json.RawMessage(joined)})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("JSON answer\n%.600s\nPrometheus'\n%.600s", got, want)
	}
	wantN := n + (h.ToFloat(nil).Size()+8)/16
	if out.n != wantN {
		t.Errorf("counted %d samples, want %d", out.n, wantN)
	}

	if out.labelsSet != 0 {
		t.Errorf("%d messages say labels to set are written in, none asked for", out.labelsSet)
	}

	// Labels to set are written into every sample, as if attached, and
	// every message says so; a series that has one of their names makes
	// the leaf refuse.
	set := labels.FromStrings("region", "r0", "top", "t")
	out = &jsonSender{t: t}
	if err := s.Eval(context.Background(), &Request{Query: "x", StartMs: now.UnixMilli(), EncodeJSON: true, SetLabels: set}, out); err != nil {
		t.Fatal(err)
	}
	if out.labelsSet != len(out.samples) || len(out.samples) < 2 {
		t.Errorf("%d of %d messages say the labels to set are written in", out.labelsSet, len(out.samples))
	}
	attached := make(promql.Vector, 0, len(res.Value.(promql.Vector)))
	for _, smp := range res.Value.(promql.Vector) {
		smp.Metric = labels.NewBuilder(smp.Metric).Set("region", "r0").Set("top", "t").Labels()
		attached = append(attached, smp)
	}
	if got, want := "["+string(bytes.Join(out.samples, []byte{','}))+"]", "["+prometheusJSON(t, attached)+"]"; got != want {
		t.Errorf("with labels set:\n%.600s\nwant\n%.600s", got, want)
	}
	err = s.Eval(context.Background(), &Request{Query: "x", StartMs: now.UnixMilli(), EncodeJSON: true, SetLabels: labels.FromStrings("q", "v")}, &jsonSender{t: t})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `"q"`) {
		t.Errorf("a label to set that series have: %v, want FailedPrecondition naming it", err)
	}

	// A range query: series.
	out = &jsonSender{t: t}
	if err := s.Eval(context.Background(), &Request{Query: "x", StartMs: now.UnixMilli() - 60000, EndMs: now.UnixMilli(), StepMs: 30000, EncodeJSON: true}, out); err != nil {
		t.Fatal(err)
	}
	if len(out.samples) != 0 || out.series != n+1 {
		t.Errorf("range query: %d JSON batches and %d series, want 0 and %d", len(out.samples), out.series, n+1)
	}
}

// TestJSONSamplesMalformed: the decoder refuses a JSON-samples message it
// cannot take whole.
func TestJSONSamplesMalformed(t *testing.T) {
	good := (&jsonSamples{json: []byte(`{"metric":{},"value":[1,"2"]}`), n: 1}).appendTo(nil)
	var r Response
	if err := r.Unmarshal(good); err != nil || string(r.JSON) != `{"metric":{},"value":[1,"2"]}` || r.Samples != 1 {
		t.Fatalf("good message: %v, %q, %d", err, r.JSON, r.Samples)
	}
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)-5],
		"unknown field": protowire.AppendVarint(protowire.AppendTag(append([]byte{}, good...), 7, protowire.VarintType), 1),
		"count only":    protowire.AppendVarint(protowire.AppendTag(protowire.AppendTag(nil, fieldJSONSamples, protowire.VarintType), fieldJSONCount, protowire.VarintType), 1),
	} {
		if err := r.Unmarshal(b); err == nil {
			t.Errorf("%s: decoded as %q", name, r.JSON)
		}
	}
}

// prometheusJSON is Prometheus' API encoding of v's samples, without the
// brackets.
func prometheusJSON(t testing.TB, v promql.Vector) string {
	b, err := jsoniter.ConfigCompatibleWithStandardLibrary.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[1 : len(b)-1])
}

// TestVectorJSON: the samples with labels merged in are written as
// Prometheus writes the samples with those labels.
func TestVectorJSON(t *testing.T) {
	ext := labels.FromStrings("cluster", "<east>", "zone", "z\u2028")
	v := promql.Vector{
		{T: 1500, F: 2.5, Metric: labels.FromStrings("__name__", "x", "a", "1", "job", "é")},
		{T: 1500, F: math.Inf(-1), Metric: labels.FromStrings("zz", "\x00")},
		{T: 1500, F: math.NaN(), Metric: labels.EmptyLabels()},
		{T: 1500, H: &histogram.FloatHistogram{Count: 3, Sum: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []float64{3}}, Metric: labels.FromStrings("b", "\"q\"")},
	}
	attached := make(promql.Vector, len(v))
	for i, s := range v {
		attached[i] = s
		attached[i].Metric = labels.NewBuilder(s.Metric).Set("cluster", "<east>").Set("zone", "z\u2028").Labels()
	}
	got, n, err := VectorJSON(v, ext)
	if err != nil {
		t.Fatal(err)
	}
	if want := prometheusJSON(t, attached); string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if want := 3 + (v[3].H.Size()+8)/16; n != want {
		t.Errorf("counted %d samples, want %d", n, want)
	}
	if got, _, _ := VectorJSON(v, labels.EmptyLabels()); string(got) != prometheusJSON(t, v) {
		t.Errorf("without labels to add:\n%s\nwant\n%s", got, prometheusJSON(t, v))
	}
}

// FuzzVectorJSON: whatever the labels and values, the encoding is
// Prometheus' own of the samples with the external labels attached.
func FuzzVectorJSON(f *testing.F) {
	f.Add("job", "a\"<>&\u2028", "cluster", "east", 1.5)
	f.Add("", "\xff\xfe", "a", "\x00", math.Inf(1))
	f.Fuzz(func(t *testing.T, name, value, extName, extValue string, x float64) {
		// Stored labels have a name and a value; the external ones are
		// not the series' own.
		if name == "" || value == "" || extName == "" || extValue == "" || name == extName || extName == "__name__" {
			return
		}
		ext := labels.FromStrings(extName, extValue)
		v := promql.Vector{
			{T: 1, F: x, Metric: labels.FromStrings(name, value)},
			{T: -1000, F: -x, Metric: labels.FromStrings("__name__", value, name, extValue)},
		}
		if name == "__name__" {
			v = v[:1]
		}
		attached := make(promql.Vector, len(v))
		for i, s := range v {
			attached[i] = s
			attached[i].Metric = labels.NewBuilder(s.Metric).Set(extName, extValue).Labels()
		}
		got, _, err := VectorJSON(v, ext)
		if err != nil {
			t.Fatal(err)
		}
		if want := prometheusJSON(t, attached); string(got) != want {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
	})
}

// BenchmarkVectorJSON: a leaf's JSON answer to a raw selector, 1,600
// series of six labels with the external label written in (about 270 KB,
// two messages), as Eval sends them.
func BenchmarkVectorJSON(b *testing.B) {
	v := make(promql.Vector, 1600)
	for i := range v {
		v[i] = promql.Sample{T: 1795452730000, F: float64(i) * 1.5, Metric: labels.FromStrings(
			"__name__", "http_requests_total", "code", "500", "instance", "target-"+strconv.Itoa(i/8)+":9100",
			"job", "api", "method", "get", "path", "/api/v"+strconv.Itoa(i%8))}
	}
	ext := labels.FromStrings("cluster", "leaf-00")
	b.ReportAllocs()
	for b.Loop() {
		if err := sendVectorJSON(discardJSON{}, v, ext, false); err != nil {
			b.Fatal(err)
		}
	}
}

// discardJSON is a Sender that sends nowhere.
type discardJSON struct{}

func (discardJSON) Send(*querypb.QueryResponse) error { return nil }
func (discardJSON) SendJSON([]byte, int, bool) error  { return nil }
