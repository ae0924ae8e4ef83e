package federation

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"

	"github.com/panorama-obs/panorama/federation/pushdown"
)

// A query whose whole answer is the union of the leaves' answers (a
// selector, or a function of each series, pushed down as it is) needs no
// evaluation at the federator: an instant vector's samples go out as the
// leaves sent them, in no particular order. When the caller is the
// Prometheus query API, which would only encode the vector as JSON, the
// leaves are asked for their samples already in that JSON
// (pushdown.Request.EncodeJSON), and the API writes the pieces out as they
// are; a leaf that answers with series anyway has them encoded as they
// arrive, on that leaf's goroutine. A raw selector over thousands of
// series spent most of the federator's time decoding them, evaluating
// them and encoding them again.

type encodedResultKey struct{}

// withEncodedResult marks ctx as the query API's, for a query whose answer
// is only encoded as JSON, unchanged (no stats, no limit).
func withEncodedResult(ctx context.Context) context.Context {
	return context.WithValue(ctx, encodedResultKey{}, true)
}

func encodedResultAccepted(ctx context.Context) bool {
	ok, _ := ctx.Value(encodedResultKey{}).(bool)
	return ok
}

type setLabelsKey struct{}

// withEncodedRelay marks ctx as a parent's push-down request for its
// answer in JSON (pushdown.Request.EncodeJSON) with the labels set above
// (Request.SetLabels): an answer made of the leaves' JSON is passed on as
// it is (pushdown.Encoded), a level of a cascade encoding nothing itself.
func withEncodedRelay(ctx context.Context, set labels.Labels) context.Context {
	return context.WithValue(withEncodedResult(ctx), setLabelsKey{}, set)
}

// setLabelsFrom returns the labels set above (withEncodedRelay).
func setLabelsFrom(ctx context.Context) labels.Labels {
	set, _ := ctx.Value(setLabelsKey{}).(labels.Labels)
	return set
}

// encodedVector is an instant vector already encoded as the JSON of
// Prometheus' query API: each part holds the comma-separated JSON of
// samples, as Prometheus encodes one promql.Sample; samples counts them as
// the engine counts against its sample limit.
type encodedVector struct {
	parts   [][]byte
	samples int
}

func (encodedVector) Type() parser.ValueType { return parser.ValueTypeVector }

// EncodedParts implements pushdown.Encoded.
func (v encodedVector) EncodedParts() ([][]byte, int) { return v.parts, v.samples }

func (v encodedVector) String() string {
	return fmt.Sprintf("instant vector of %d samples, encoded", v.samples)
}

// MarshalJSON writes the vector whole; the query API's answer takes the
// pieces through encodedCodec instead.
func (v encodedVector) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(v.size())
	v.writeTo(&b)
	return b.Bytes(), nil
}

func (v encodedVector) writeTo(w interface {
	Write([]byte) (int, error)
}) {
	_, _ = w.Write([]byte{'['})
	first := true
	for _, p := range v.parts {
		if len(p) == 0 {
			continue
		}
		if !first {
			_, _ = w.Write([]byte{','})
		}
		first = false
		_, _ = w.Write(p)
	}
	_, _ = w.Write([]byte{']'})
}

func (v encodedVector) size() int {
	n := 2
	for _, p := range v.parts {
		n += len(p) + 1
	}
	return n
}

// encodedCodec is Prometheus' JSON codec, which writes an encoded
// vector's pieces once, straight into the answer: jsoniter would write
// them into its buffer and then copy the whole answer out of it.
type encodedCodec struct{ apiv1.JSONCodec }

// resultKey is where the vector goes in the JSON of a query's answer:
// "result" is the first key of this shape in it (a string holding it
// would escape its quotes).
var resultKey = []byte(`"result":[]`)

func (c encodedCodec) Encode(resp *apiv1.Response) ([]byte, error) {
	qd, ok := resp.Data.(*apiv1.QueryData)
	if !ok {
		return c.JSONCodec.Encode(resp)
	}
	v, ok := qd.Result.(encodedVector)
	if !ok {
		return c.JSONCodec.Encode(resp)
	}
	// The answer around an empty vector, then the vector put in.
	data := *qd
	data.Result = encodedVector{}
	shell := *resp
	shell.Data = &data
	b, err := c.JSONCodec.Encode(&shell)
	if err != nil {
		return nil, err
	}
	i := bytes.Index(b, resultKey)
	if i < 0 {
		return nil, fmt.Errorf("no %s in the encoding of an answer", resultKey)
	}
	i += len(resultKey) - 2 // at the [
	out := bytes.NewBuffer(make([]byte, 0, len(b)+v.size()))
	out.Write(b[:i])
	v.writeTo(out)
	out.Write(b[i+2:])
	return out.Bytes(), nil
}

// errNotEncodable: a leaf's answer is not one sample per series at the
// query's time; the query is answered the general way instead.
var errNotEncodable = errors.New("a leaf's answer to an instant query has a series without one sample at the query time")

// encodeSamples returns the JSON of series, as the engine would select
// them at time t from the leaf's answer: a float or a histogram at t, and
// not a stale marker (pushdown.VectorJSON), with the labels set written
// in and their count as the engine counts samples. A series that has a
// label of set's names already is not encodable.
func encodeSamples(series []*prompb.TimeSeries, t int64, set labels.Labels) ([]byte, int, error) {
	vec := make(promql.Vector, 0, len(series))
	for _, ts := range series {
		for _, l := range ts.Labels {
			if set.Has(l.Name) {
				return nil, 0, errNotEncodable
			}
		}
		switch {
		case len(ts.Samples) == 1 && len(ts.Histograms) == 0 && ts.Samples[0].Timestamp == t:
			if value.IsStaleNaN(ts.Samples[0].Value) {
				continue
			}
			vec = append(vec, promql.Sample{T: t, F: ts.Samples[0].Value, Metric: labelpb.ZLabelsToPromLabels(ts.Labels)})
		case len(ts.Samples) == 0 && len(ts.Histograms) == 1 && ts.Histograms[0].Timestamp == t:
			vec = append(vec, promql.Sample{T: t, H: prompb.FromProtoHistogram(ts.Histograms[0]), Metric: labelpb.ZLabelsToPromLabels(ts.Labels)})
		default:
			return nil, 0, errNotEncodable
		}
	}
	return pushdown.VectorJSON(vec, set)
}
