package pushdown

import (
	"errors"
	"math"
	"unsafe"

	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"
	"google.golang.org/protobuf/encoding/protowire"
)

// Response is one message of an answer as the federator receives it: a
// querypb.QueryResponse, or samples encoded as JSON (Sender.SendJSON). A
// batch of series, which is what a leaf sends for all but warnings, is
// decoded into a few slabs (one array each of series, labels and samples
// per message) instead of gogo-protobuf's allocations per series and
// per growth of every label and sample slice: for a raw selector over
// 16,000 series those were a fifth of the federator's CPU. Anything else,
// and any message the fast path does not take as it is, is decoded by
// querypb's own Unmarshal, so that the result is always what gogo-protobuf
// gives. Label strings point into the message's buffer, as gogo-protobuf's
// zero-copy labels (labelpb.ZLabel) do: Thanos' gRPC codec hands every
// message a buffer of its own.
type Response struct {
	querypb.QueryResponse
	// JSON, when not nil, are samples as Sender.SendJSON sends them, and
	// Samples their count; the QueryResponse is then empty.
	JSON    []byte
	Samples int
	// LabelsSet: the JSON has the request's SetLabels written in.
	LabelsSet bool
}

// errSlow sends a message to querypb's own Unmarshal.
var errSlow = errors.New("not on the fast path")

func (r *Response) Unmarshal(b []byte) error {
	*r = Response{}
	if num, _, _ := protowire.ConsumeTag(b); num == fieldJSONSamples {
		return r.unmarshalJSON(b)
	}
	if series, err := decodeBatchResponse(b); err == nil {
		r.Result = &querypb.QueryResponse_TimeseriesBatch{TimeseriesBatch: &querypb.TimeSeriesBatch{Series: series}}
		return nil
	}
	r.QueryResponse = querypb.QueryResponse{}
	return r.QueryResponse.Unmarshal(b)
}

func (r *Response) unmarshalJSON(b []byte) error {
	for f := (fields{b: b}); ; {
		num, typ, v, ok := f.next()
		if !ok {
			if f.err || r.JSON == nil {
				return errors.New("pushdown: malformed JSON samples message")
			}
			return nil
		}
		switch {
		case num == fieldJSONSamples && typ == protowire.BytesType:
			// The message's buffer is its own (see above).
			r.JSON = v
		case num == fieldJSONCount && typ == protowire.VarintType:
			n, _ := protowire.ConsumeVarint(v)
			if n > math.MaxInt32 {
				return errors.New("pushdown: malformed JSON samples message")
			}
			r.Samples = int(n)
		case num == fieldJSONLabelsSet && typ == protowire.VarintType:
			n, _ := protowire.ConsumeVarint(v)
			r.LabelsSet = n != 0
		default:
			return errors.New("pushdown: malformed JSON samples message")
		}
	}
}

// decodeBatchResponse decodes a QueryResponse that is exactly one
// timeseries_batch field (4) holding series of labels, float samples and
// histograms; anything else is errSlow.
func decodeBatchResponse(b []byte) ([]*prompb.TimeSeries, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 4 || typ != protowire.BytesType {
		return nil, errSlow
	}
	batch, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, errSlow
	}

	// First pass: check the shape and count what to allocate.
	var nSeries, nLabels, nSamples, nHists int
	for it := (fields{b: batch}); ; {
		num, typ, series, ok := it.next()
		if !ok {
			if it.err {
				return nil, errSlow
			}
			break
		}
		if num != 1 || typ != protowire.BytesType {
			return nil, errSlow
		}
		nSeries++
		for f := (fields{b: series}); ; {
			num, typ, _, ok := f.next()
			if !ok {
				if f.err {
					return nil, errSlow
				}
				break
			}
			switch {
			case typ != protowire.BytesType:
				return nil, errSlow
			case num == 1:
				nLabels++
			case num == 2:
				nSamples++
			case num == 4:
				nHists++
			default: // exemplars (3) and unknown fields
				return nil, errSlow
			}
		}
	}
	if nSeries == 0 {
		return nil, nil
	}

	// Second pass: fill the slabs.
	var (
		series  = make([]prompb.TimeSeries, nSeries)
		out     = make([]*prompb.TimeSeries, nSeries)
		labels  = make([]labelpb.ZLabel, nLabels)
		samples = make([]prompb.Sample, nSamples)
		hists   []prompb.Histogram
	)
	if nHists > 0 {
		hists = make([]prompb.Histogram, nHists)
	}
	var li, si, hi int
	it := fields{b: batch}
	for i := range series {
		_, _, b, _ := it.next()
		ts := &series[i]
		out[i] = ts
		l0, s0, h0 := li, si, hi
		for f := (fields{b: b}); ; {
			num, _, v, ok := f.next()
			if !ok {
				break
			}
			switch num {
			case 1:
				if !decodeLabel(v, &labels[li]) {
					return nil, errSlow
				}
				li++
			case 2:
				if !decodeSample(v, &samples[si]) {
					return nil, errSlow
				}
				si++
			default:
				if err := hists[hi].Unmarshal(v); err != nil {
					return nil, errSlow
				}
				hi++
			}
		}
		ts.Labels, ts.Samples, ts.Histograms = part(labels, l0, li), part(samples, s0, si), part(hists, h0, hi)
	}
	return out, nil
}

// part is one series' part of a slab, with its capacity cut so that an
// append cannot run into the next series; nil when empty, as
// gogo-protobuf leaves an absent repeated field.
func part[T any](slab []T, from, to int) []T {
	if from == to {
		return nil
	}
	return slab[from:to:to]
}

// fields walks the fields of a message; a length-delimited field's value
// is its bytes, a number's its encoding.
type fields struct {
	b   []byte
	err bool // the walk stopped at a malformed field
}

func (f *fields) next() (protowire.Number, protowire.Type, []byte, bool) {
	if len(f.b) == 0 {
		return 0, 0, nil, false
	}
	num, typ, n := protowire.ConsumeTag(f.b)
	if n < 0 {
		f.err = true
		return 0, 0, nil, false
	}
	b := f.b[n:]
	var v []byte
	switch typ {
	case protowire.BytesType:
		v, n = protowire.ConsumeBytes(b)
	case protowire.VarintType:
		_, n = protowire.ConsumeVarint(b)
		v = b[:max(n, 0)]
	case protowire.Fixed64Type:
		_, n = protowire.ConsumeFixed64(b)
		v = b[:max(n, 0)]
	default:
		n = -1
	}
	if n < 0 {
		f.err = true
		return 0, 0, nil, false
	}
	f.b = b[n:]
	return num, typ, v, true
}

func decodeLabel(b []byte, l *labelpb.ZLabel) bool {
	f := fields{b: b}
	for {
		num, typ, v, ok := f.next()
		if !ok {
			return !f.err
		}
		switch {
		case typ != protowire.BytesType:
			return false
		case num == 1:
			l.Name = noAllocString(v)
		case num == 2:
			l.Value = noAllocString(v)
		default:
			return false
		}
	}
}

func decodeSample(b []byte, s *prompb.Sample) bool {
	f := fields{b: b}
	for {
		num, typ, v, ok := f.next()
		if !ok {
			return !f.err
		}
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			x, _ := protowire.ConsumeFixed64(v)
			s.Value = math.Float64frombits(x)
		case num == 2 && typ == protowire.VarintType:
			x, _ := protowire.ConsumeVarint(v)
			s.Timestamp = int64(x)
		default:
			return false
		}
	}
}

func noAllocString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
