package pushdown

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"
	"google.golang.org/protobuf/encoding/protowire"
)

func marshalResponse(t testing.TB, r *querypb.QueryResponse) []byte {
	t.Helper()
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testSeries(n, samples int) []*prompb.TimeSeries {
	out := make([]*prompb.TimeSeries, n)
	for i := range out {
		ts := &prompb.TimeSeries{Labels: labelpb.ZLabelsFromPromLabels(labels.FromStrings(
			"__name__", "http_requests_total", "cluster", "leaf-03", "code", "500",
			"handler", fmt.Sprintf("/api/v1/h%d", i%20), "instance", fmt.Sprintf("10.0.%d.%d:9090", i/250, i%250),
			"job", "synthetic", "method", "GET", "namespace", "default", "pod", fmt.Sprintf("pod-%d", i)))}
		for j := range samples {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: 1700000000000 + int64(j)*15000 - int64(i), Value: float64(i*j) + 0.25})
		}
		out[i] = ts
	}
	return out
}

func batchResponse(series []*prompb.TimeSeries) *querypb.QueryResponse {
	return &querypb.QueryResponse{Result: &querypb.QueryResponse_TimeseriesBatch{TimeseriesBatch: &querypb.TimeSeriesBatch{Series: series}}}
}

// TestResponseDecodeMatchesGogo: the federator's decoding of a leaf's
// answer gives exactly what querypb's own Unmarshal gives, on the fast
// path (batches of labels, samples and histograms) and off it.
func TestResponseDecodeMatchesGogo(t *testing.T) {
	hist := &histogram.Histogram{Count: 12, ZeroCount: 2, ZeroThreshold: 0.001, Sum: 18.4, Schema: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}}, PositiveBuckets: []int64{1, 1, -1, 0},
		NegativeSpans: []histogram.Span{{Offset: 0, Length: 1}}, NegativeBuckets: []int64{2}}
	withHists := testSeries(3, 0)
	withHists[1].Histograms = []prompb.Histogram{prompb.HistogramToHistogramProto(1700000000000, hist), prompb.FloatHistogramToHistogramProto(1700000015000, hist.ToFloat(nil))}
	withHists[2].Samples = []prompb.Sample{{Timestamp: -1, Value: math.Inf(-1)}, {Timestamp: math.MaxInt64, Value: math.MaxFloat64}}
	withExemplars := testSeries(2, 1)
	withExemplars[0].Exemplars = []prompb.Exemplar{{Labels: []labelpb.ZLabel{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: 5}}
	empty := testSeries(2, 0)
	empty[0].Labels = nil

	for _, c := range []struct {
		name string
		resp *querypb.QueryResponse
		fast bool
	}{
		{"batch", batchResponse(testSeries(256, 3)), true},
		{"histograms", batchResponse(withHists), true},
		{"no labels, no samples", batchResponse(empty), true},
		{"empty batch", batchResponse(nil), true},
		{"exemplars", batchResponse(withExemplars), false},
		{"one series", &querypb.QueryResponse{Result: &querypb.QueryResponse_Timeseries{Timeseries: testSeries(1, 2)[0]}}, false},
		{"warnings", querypb.NewQueryWarningsResponse(errors.New("leaf-3 is down")), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := marshalResponse(t, c.resp)
			if _, err := decodeBatchResponse(b); (err == nil) != c.fast {
				t.Errorf("fast path taken: %v, want %v", err == nil, c.fast)
			}
			var want querypb.QueryResponse
			if err := want.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			var got Response
			if err := got.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.QueryResponse, want) {
				t.Errorf("decoded\n%v\nwant\n%v", got.QueryResponse.String(), want.String())
			}
		})
	}

	// A series' slices do not share capacity with the next series'.
	var got Response
	if err := got.Unmarshal(marshalResponse(t, batchResponse(testSeries(2, 2)))); err != nil {
		t.Fatal(err)
	}
	s := got.GetTimeseriesBatch().Series
	next := s[1].Samples[0]
	_ = append(s[0].Samples, prompb.Sample{Value: 99})
	_ = append(s[0].Labels, labelpb.ZLabel{Name: "zz"})
	if s[1].Samples[0] != next || s[1].Labels[0].Name != "__name__" {
		t.Error("appending to one series' samples or labels overwrote the next series")
	}
}

// FuzzResponseUnmarshal: whatever bytes arrive, the federator's decoding
// fails exactly when querypb's Unmarshal fails, and otherwise gives the
// same message; a message of JSON samples (which starts with their field,
// unknown to querypb) decodes to samples that encode back to the same.
func FuzzResponseUnmarshal(f *testing.F) {
	f.Add((&jsonSamples{json: []byte(`{"metric":{},"value":[1,"2"]}`), n: 1}).appendTo(nil))
	f.Add(marshalResponse(f, batchResponse(testSeries(3, 2))))
	h := testSeries(1, 1)
	h[0].Histograms = []prompb.Histogram{prompb.FloatHistogramToHistogramProto(5, &histogram.FloatHistogram{Count: 3, Sum: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []float64{3}})}
	f.Add(marshalResponse(f, batchResponse(h)))
	f.Add(marshalResponse(f, querypb.NewQueryWarningsResponse(errors.New("w"))))
	f.Add([]byte{0x22, 0x00})
	f.Add([]byte{0x22, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if num, _, _ := protowire.ConsumeTag(b); num == fieldJSONSamples {
			var got Response
			if err := got.Unmarshal(b); err != nil {
				return
			}
			if got.JSON == nil || got.GetResult() != nil {
				t.Fatalf("JSON samples decoded to %q and %v", got.JSON, got.GetResult())
			}
			var back Response
			if err := back.Unmarshal((&jsonSamples{json: got.JSON, n: got.Samples}).appendTo(nil)); err != nil || !bytes.Equal(back.JSON, got.JSON) || back.Samples != got.Samples {
				t.Fatalf("encoded again: %v, %q (%d), want %q (%d)", err, back.JSON, back.Samples, got.JSON, got.Samples)
			}
			return
		}
		var want querypb.QueryResponse
		wantErr := want.Unmarshal(b)
		var got Response
		gotErr := got.Unmarshal(b)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("error %v, querypb's %v", gotErr, wantErr)
		}
		// Compared as bytes again: a NaN is not equal to itself.
		if gotErr == nil && !bytes.Equal(marshalResponse(t, &got.QueryResponse), marshalResponse(t, &want)) {
			t.Fatalf("decoded\n%v\nwant\n%v", got.QueryResponse.String(), want.String())
		}
	})
}

func BenchmarkResponseUnmarshal(b *testing.B) {
	msg := marshalResponse(b, batchResponse(testSeries(256, 1)))
	b.Run("querypb", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r querypb.QueryResponse
			if err := r.Unmarshal(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("federator", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r Response
			if err := r.Unmarshal(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
