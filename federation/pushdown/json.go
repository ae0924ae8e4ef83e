package pushdown

import (
	"slices"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/jsonutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/panorama-obs/panorama/internal/labelsort"
)

// VectorJSON gives the samples of v as Prometheus' query API encodes an
// instant vector's, without the surrounding brackets; the labels of ext
// (whose names no sample has) are written into every sample's metric as if
// it had them. It returns them with their count as the engine counts
// samples against --query.max-samples (a native histogram by its size).
func VectorJSON(v promql.Vector, ext labels.Labels) ([]byte, int, error) {
	return AppendVectorJSON(nil, v, ext)
}

// AppendVectorJSON is VectorJSON appending to dst, which a caller encoding
// one batch after another reuses.
func AppendVectorJSON(dst []byte, v promql.Vector, ext labels.Labels) ([]byte, int, error) {
	if len(v) == 0 {
		return dst, 0, nil
	}
	var extList []labels.Label
	ext.Range(func(l labels.Label) { extList = append(extList, l) })
	n := 0
	for _, s := range v {
		if s.H != nil {
			n += (s.H.Size() + 8) / 16
		} else {
			n++
		}
	}
	if need := jsonSizeGuess(v, ext); cap(dst)-len(dst) < need {
		// Grown once for v, and at least doubled for the next.
		dst = slices.Grow(dst, max(need, cap(dst)))
	}
	stream := jsoniter.NewStream(jsoniter.ConfigCompatibleWithStandardLibrary, nil, 0)
	stream.SetBuffer(dst)
	for i, s := range v {
		if i > 0 {
			stream.WriteMore()
		}
		writeSampleJSON(stream, s, extList)
	}
	if stream.Error != nil {
		return dst, 0, stream.Error
	}
	return stream.Buffer(), n, nil
}

// appendJSONString appends str as jsoniter's Stream.WriteString writes
// it (which Prometheus' encoding uses): a string with no control
// character, quote or backslash as it is, between quotes (other bytes,
// invalid UTF-8 too, pass as they are); any other through stream.
func appendJSONString(b []byte, stream *jsoniter.Stream, str string) []byte {
	for i := 0; i < len(str); i++ {
		if c := str[i]; c < 0x20 || c == '"' || c == '\\' {
			stream.SetBuffer(b)
			stream.WriteString(str)
			return stream.Buffer()
		}
	}
	b = append(b, '"')
	b = append(b, str...)
	return append(b, '"')
}

// jsonSizeGuess guesses the size of v's JSON with ext written in: the
// first sample's labels for every one, and room for the value.
func jsonSizeGuess(v promql.Vector, ext labels.Labels) int {
	if len(v) == 0 {
		return 0
	}
	one := 48
	v[0].Metric.Range(func(l labels.Label) { one += len(l.Name) + len(l.Value) + 6 })
	ext.Range(func(l labels.Label) { one += len(l.Name) + len(l.Value) + 6 })
	return one * len(v) * 17 / 16
}

// sendVectorJSON sends v's samples as JSON with ext written in
// (AppendVectorJSON) in messages of about jsonMessageBytes: batch after
// batch encoded into one buffer, allocated once and copied by the codec
// at each message.
func sendVectorJSON(out Sender, v promql.Vector, ext labels.Labels, labelsSet bool) error {
	// Room for a full message and a batch more, or for all of v.
	buf := make([]byte, 0, min(jsonMessageBytes+jsonSizeGuess(v[:min(batchSize, len(v))], ext), jsonSizeGuess(v, ext)))
	count := 0
	for start := 0; start < len(v); start += batchSize {
		if len(buf) > 0 {
			buf = append(buf, ',')
		}
		var n int
		var err error
		if buf, n, err = AppendVectorJSON(buf, v[start:min(start+batchSize, len(v))], ext); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		count += n
		if len(buf) >= jsonMessageBytes || start+batchSize >= len(v) {
			if err := out.SendJSON(buf, count, labelsSet); err != nil {
				return err
			}
			buf, count = buf[:0], 0
		}
	}
	return nil
}

// writeSampleJSON is Prometheus' marshalSampleJSON (web/api/v1) with the
// labels extra merged into the metric: TestVectorJSON and
// FuzzVectorJSON hold it to Prometheus' own encoding.
func writeSampleJSON(stream *jsoniter.Stream, s promql.Sample, extra []labels.Label) {
	// The metric appended to a local slice: the stream's own would be
	// written back to the heap at every append.
	b := append(stream.Buffer(), `{"metric":{`...)
	first := true
	labelsort.RangeWith(s.Metric, extra, func(l labels.Label) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, stream, l.Name)
		b = append(b, ':')
		b = appendJSONString(b, stream, l.Value)
	})
	stream.SetBuffer(append(b, '}'))
	stream.WriteMore()
	if s.H == nil {
		stream.WriteObjectField(`value`)
	} else {
		stream.WriteObjectField(`histogram`)
	}
	stream.WriteArrayStart()
	jsonutil.MarshalTimestamp(s.T, stream)
	stream.WriteMore()
	if s.H == nil {
		jsonutil.MarshalFloat(s.F, stream)
	} else {
		jsonutil.MarshalHistogram(s.H, stream)
	}
	stream.WriteArrayEnd()
	stream.WriteObjectEnd()
}
