package pushdown

import (
	"fmt"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"

	// Registers Prometheus' JSON encoders of promql.Vector and the types
	// in it with jsoniter, which AppendVectorJSON relies on.
	_ "github.com/prometheus/prometheus/web/api/v1"
)

// AppendVectorJSON appends to dst the samples of v as Prometheus' query API
// encodes an instant vector's, with its own encoder, without the
// surrounding brackets, and after a comma when dst is not empty. It
// returns them with their count as the engine counts samples against
// --query.max-samples (a native histogram by its size).
func AppendVectorJSON(dst []byte, v promql.Vector) ([]byte, int, error) {
	if len(v) == 0 {
		return dst, 0, nil
	}
	n := 0
	size := 2 // [ ]
	for _, s := range v {
		if s.H != nil {
			n += (s.H.Size() + 8) / 16
		} else {
			n++
		}
		// A guess, to allocate once: the labels and their quotes, and a
		// value.
		size += 48
		s.Metric.Range(func(l labels.Label) { size += len(l.Name) + len(l.Value) + 6 })
	}
	stream := jsoniter.NewStream(jsoniter.ConfigCompatibleWithStandardLibrary, nil, 0)
	stream.SetBuffer(make([]byte, 0, size))
	stream.WriteVal(v)
	if stream.Error != nil {
		return dst, 0, stream.Error
	}
	out := stream.Buffer()
	if len(out) < 2 || out[0] != '[' || out[len(out)-1] != ']' {
		return dst, 0, fmt.Errorf("encoding a vector gave %.20q…", out)
	}
	if len(dst) == 0 {
		// The stream's own buffer, whole.
		return out[1 : len(out)-1], n, nil
	}
	dst = append(dst, ',')
	return append(dst, out[1:len(out)-1]...), n, nil
}
