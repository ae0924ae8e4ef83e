package pushdown

import (
	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/jsonutil"

	"github.com/panorama-obs/panorama/internal/labelsort"
)

// VectorJSON gives the samples of v as Prometheus' query API encodes an
// instant vector's, without the surrounding brackets; the labels of ext
// (whose names no sample has) are written into every sample's metric as if
// it had them. It returns them with their count as the engine counts
// samples against --query.max-samples (a native histogram by its size).
func VectorJSON(v promql.Vector, ext labels.Labels) ([]byte, int, error) {
	if len(v) == 0 {
		return nil, 0, nil
	}
	var extList []labels.Label
	extSize := 0
	ext.Range(func(l labels.Label) {
		extList = append(extList, l)
		extSize += len(l.Name) + len(l.Value) + 6
	})
	n := 0
	size := 0
	for _, s := range v {
		if s.H != nil {
			n += (s.H.Size() + 8) / 16
		} else {
			n++
		}
		// A guess, to allocate once: the labels and their quotes, and a
		// value.
		size += 48 + extSize
		s.Metric.Range(func(l labels.Label) { size += len(l.Name) + len(l.Value) + 6 })
	}
	stream := jsoniter.NewStream(jsoniter.ConfigCompatibleWithStandardLibrary, nil, 0)
	stream.SetBuffer(make([]byte, 0, size))
	for i, s := range v {
		if i > 0 {
			stream.WriteMore()
		}
		writeSampleJSON(stream, s, extList)
	}
	if stream.Error != nil {
		return nil, 0, stream.Error
	}
	return stream.Buffer(), n, nil
}

// writeSampleJSON is Prometheus' marshalSampleJSON (web/api/v1) with the
// labels extra merged into the metric: TestVectorJSON and
// FuzzVectorJSON hold it to Prometheus' own encoding.
func writeSampleJSON(stream *jsoniter.Stream, s promql.Sample, extra []labels.Label) {
	stream.WriteObjectStart()
	stream.WriteObjectField(`metric`)
	stream.WriteObjectStart()
	first := true
	label := func(name, value string) {
		if !first {
			stream.WriteMore()
		}
		first = false
		stream.WriteString(name)
		stream.WriteRaw(`:`)
		stream.WriteString(value)
	}
	labelsort.RangeWith(s.Metric, extra, func(l labels.Label) { label(l.Name, l.Value) })
	stream.WriteObjectEnd()
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
