// Package pushdown is the leaf side of Panorama's aggregation push-down: a
// gRPC service, served next to the StoreAPI on a collector's or a
// federator's gRPC port, that evaluates a PromQL expression over the leaf's
// own data at exactly the timestamps of the federator's query and streams
// the result back. The federator (package federation) decides what is sent
// and merges what comes back.
//
// The service is Panorama's own, not Thanos' thanos.Query: querypb carries
// times in whole seconds, and a federated answer must equal Prometheus' at
// millisecond timestamps. The answers reuse Thanos' querypb.QueryResponse
// (series in Thanos' prompb, with native histograms, and warnings), so only
// the small request message is defined here.
package pushdown

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	// Registers Thanos' gRPC codec, which marshals gogo-protobuf style
	// messages (querypb.QueryResponse, and Request below) directly.
	_ "github.com/thanos-io/thanos/pkg/extgrpc"
)

// Request asks a leaf to evaluate Query, as an instant query at Start when
// Step is 0, else as a range query from Start to End every Step; times and
// durations are in milliseconds.
type Request struct {
	Query         string
	StartMs       int64
	EndMs         int64
	StepMs        int64
	LookbackMs    int64
	ReplicaLabels []string
	// Dedup merges HA replicas on ReplicaLabels and drops those labels, as
	// the federator's own querier does.
	Dedup           bool
	PartialResponse bool
	// Parts asks, instead of Query's own answer, for the partial sums of
	// Query's series grouped by PartsGrouping (or without it, with
	// PartsWithout), as the state of Prometheus' compensated summation:
	// per group and step, the running sum (series labelled
	// __panorama_part__="t"), its compensation ("c") and the count ("n").
	// The federator merges the states of the leaves, so that a sum over
	// many leaves rounds as Prometheus' sum over all their series does.
	Parts         bool
	PartsGrouping []string
	PartsWithout  bool
	// SortSeries has the leaf's engine read its series in label order, as
	// the federator would have pulled them (topk and bottomk break ties by
	// the order they meet series in); otherwise in the storage's order.
	SortSeries bool
	// MaxSamples is the requester's --query.max-samples: the leaf
	// evaluates with the smaller of it and its own limit, so that a query
	// over the requester's limit fails as it would without push-down. 0
	// (a request from a federator before this field) means no limit but
	// the leaf's own.
	MaxSamples int64
	// EncodeJSON asks, for an instant query whose answer is a vector,
	// for its samples as Prometheus' query API encodes them in JSON
	// (Sender.SendJSON) instead of as series: the requester only
	// concatenates them into its own API's answer. A leaf that does not
	// know the field answers with series, which the requester encodes.
	EncodeJSON bool
	// SetLabels, with EncodeJSON, are labels the requester attaches to
	// every series of its answer (its own --label, and those of the
	// requesters above it): the leaf writes them into every sample's
	// metric and says so (Response.LabelsSet), so that the requester can
	// pass the JSON on as it is. A leaf refuses (FailedPrecondition) when
	// a sample already has a label of one of their names, which the
	// requester's label would replace. A leaf before this field ignores
	// it and does not say so; the requester then answers another way.
	SetLabels labels.Labels
}

// Field numbers of Request on the wire.
const (
	fieldQuery protowire.Number = iota + 1
	fieldStart
	fieldEnd
	fieldStep
	fieldLookback
	fieldReplicaLabels
	fieldDedup
	fieldPartialResponse
	fieldParts
	fieldPartsGrouping
	fieldPartsWithout
	fieldSortSeries
	fieldMaxSamples
	fieldEncodeJSON
	fieldSetLabels // a message of a name (1) and a value (2), once per label
)

func (r *Request) appendTo(b []byte) []byte {
	if r.Query != "" {
		b = protowire.AppendTag(b, fieldQuery, protowire.BytesType)
		b = protowire.AppendString(b, r.Query)
	}
	for _, f := range []struct {
		n protowire.Number
		v int64
	}{{fieldStart, r.StartMs}, {fieldEnd, r.EndMs}, {fieldStep, r.StepMs}, {fieldLookback, r.LookbackMs}, {fieldMaxSamples, r.MaxSamples}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.n, protowire.VarintType)
			b = protowire.AppendVarint(b, protowire.EncodeZigZag(f.v))
		}
	}
	for _, l := range r.ReplicaLabels {
		b = protowire.AppendTag(b, fieldReplicaLabels, protowire.BytesType)
		b = protowire.AppendString(b, l)
	}
	for _, l := range r.PartsGrouping {
		b = protowire.AppendTag(b, fieldPartsGrouping, protowire.BytesType)
		b = protowire.AppendString(b, l)
	}
	r.SetLabels.Range(func(l labels.Label) {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, l.Name)
		m = protowire.AppendTag(m, 2, protowire.BytesType)
		m = protowire.AppendString(m, l.Value)
		b = protowire.AppendTag(b, fieldSetLabels, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	})
	for _, f := range []struct {
		n protowire.Number
		v bool
	}{{fieldDedup, r.Dedup}, {fieldPartialResponse, r.PartialResponse}, {fieldParts, r.Parts}, {fieldPartsWithout, r.PartsWithout}, {fieldSortSeries, r.SortSeries}, {fieldEncodeJSON, r.EncodeJSON}} {
		if f.v {
			b = protowire.AppendTag(b, f.n, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
	}
	return b
}

// Size, MarshalToSizedBuffer and Unmarshal are what Thanos' gRPC codec
// asks of a message.
func (r *Request) Size() int { return len(r.appendTo(nil)) }

func (r *Request) MarshalToSizedBuffer(buf []byte) (int, error) {
	b := r.appendTo(nil)
	if len(b) > len(buf) {
		return 0, errors.New("pushdown request: buffer too small")
	}
	// Like gogo-protobuf, fill the end of the buffer.
	return copy(buf[len(buf)-len(b):], b), nil
}

func (r *Request) Unmarshal(b []byte) error {
	*r = Request{}
	var set []labels.Label
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("pushdown request: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == fieldQuery || num == fieldReplicaLabels || num == fieldPartsGrouping):
			s, n := protowire.ConsumeString(b)
			if n < 0 {
				return fmt.Errorf("pushdown request: %w", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldQuery:
				r.Query = s
			case fieldReplicaLabels:
				r.ReplicaLabels = append(r.ReplicaLabels, s)
			default:
				r.PartsGrouping = append(r.PartsGrouping, s)
			}
		case typ == protowire.BytesType && num == fieldSetLabels:
			m, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("pushdown request: %w", protowire.ParseError(n))
			}
			b = b[n:]
			name, value, err := decodeSetLabel(m)
			if err != nil {
				return err
			}
			set = append(set, labels.Label{Name: name, Value: value})
		case typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("pushdown request: %w", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldStart:
				r.StartMs = protowire.DecodeZigZag(v)
			case fieldEnd:
				r.EndMs = protowire.DecodeZigZag(v)
			case fieldStep:
				r.StepMs = protowire.DecodeZigZag(v)
			case fieldLookback:
				r.LookbackMs = protowire.DecodeZigZag(v)
			case fieldMaxSamples:
				r.MaxSamples = protowire.DecodeZigZag(v)
			case fieldDedup:
				r.Dedup = v != 0
			case fieldPartialResponse:
				r.PartialResponse = v != 0
			case fieldParts:
				r.Parts = v != 0
			case fieldPartsWithout:
				r.PartsWithout = v != 0
			case fieldSortSeries:
				r.SortSeries = v != 0
			case fieldEncodeJSON:
				r.EncodeJSON = v != 0
			}
		default:
			// Unknown fields are skipped, for newer senders.
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("pushdown request: %w", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if len(set) > 0 {
		r.SetLabels = labels.New(set...)
		if err := checkSetLabels(r.SetLabels); err != nil {
			return err
		}
	}
	return nil
}

// decodeSetLabel decodes one label of Request.SetLabels.
func decodeSetLabel(m []byte) (name, value string, err error) {
	for f := (fields{b: m}); ; {
		num, typ, v, ok := f.next()
		if !ok {
			if f.err {
				return "", "", errors.New("pushdown request: malformed label to set")
			}
			return name, value, nil
		}
		switch {
		case num == 1 && typ == protowire.BytesType:
			name = string(v)
		case num == 2 && typ == protowire.BytesType:
			value = string(v)
		}
	}
}

// checkSetLabels refuses labels to set that are not labels: an empty name
// or value, or a name twice.
func checkSetLabels(set labels.Labels) error {
	var err error
	prev := ""
	set.Range(func(l labels.Label) {
		switch {
		case err != nil:
		case l.Name == "" || l.Value == "":
			err = fmt.Errorf("pushdown request: label to set %q=%q: a name and a value are needed", l.Name, l.Value)
		case l.Name == prev:
			err = fmt.Errorf("pushdown request: label to set %q twice", l.Name)
		}
		prev = l.Name
	})
	return err
}

// ServiceName and evalMethod name the service on the wire.
const (
	ServiceName = "panorama.federation.PushDown"
	evalMethod  = "/" + ServiceName + "/Eval"
)

// Evaluator answers one Request, sending the result's series and warnings.
type Evaluator interface {
	Eval(ctx context.Context, req *Request, s Sender) error
}

// Sender sends an answer's messages.
type Sender interface {
	// Send sends series or warnings.
	Send(*querypb.QueryResponse) error
	// SendJSON sends samples encoded as Prometheus' query API does, for
	// Request.EncodeJSON: the JSON objects of one or more samples,
	// separated by commas; n counts them as the engine counts samples
	// against --query.max-samples. samples is only read during the call:
	// the caller reuses it.
	//
	// labelsSet says that Request.SetLabels are written into every
	// sample.
	SendJSON(samples []byte, n int, labelsSet bool) error
}

// SendFunc is a Sender of series and warnings only.
type SendFunc func(*querypb.QueryResponse) error

func (f SendFunc) Send(r *querypb.QueryResponse) error { return f(r) }

func (SendFunc) SendJSON([]byte, int, bool) error {
	return errors.New("pushdown: this sender takes no JSON")
}

type streamSender struct{ grpc.ServerStream }

func (s streamSender) Send(r *querypb.QueryResponse) error { return s.SendMsg(r) }

func (s streamSender) SendJSON(samples []byte, n int, labelsSet bool) error {
	return s.SendMsg(&jsonSamples{json: samples, n: n, labelsSet: labelsSet})
}

// Fields of the message SendJSON sends, in the place of a
// querypb.QueryResponse; numbered far from querypb's own.
const (
	fieldJSONSamples protowire.Number = 1000 + iota
	fieldJSONCount
	fieldJSONLabelsSet // only when true: an older requester refuses it
)

// jsonSamples is the message of SendJSON.
type jsonSamples struct {
	json      []byte
	n         int
	labelsSet bool
}

func (m *jsonSamples) appendTo(b []byte) []byte {
	b = protowire.AppendTag(b, fieldJSONSamples, protowire.BytesType)
	b = protowire.AppendBytes(b, m.json)
	b = protowire.AppendTag(b, fieldJSONCount, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(m.n))
	if m.labelsSet {
		b = protowire.AppendTag(b, fieldJSONLabelsSet, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

func (m *jsonSamples) Size() int {
	size := protowire.SizeTag(fieldJSONSamples) + protowire.SizeBytes(len(m.json)) +
		protowire.SizeTag(fieldJSONCount) + protowire.SizeVarint(uint64(m.n))
	if m.labelsSet {
		size += protowire.SizeTag(fieldJSONLabelsSet) + protowire.SizeVarint(1)
	}
	return size
}

func (m *jsonSamples) MarshalToSizedBuffer(buf []byte) (int, error) {
	size := m.Size()
	if size > len(buf) {
		return 0, errors.New("pushdown JSON samples: buffer too small")
	}
	// Like gogo-protobuf, fill the end of the buffer.
	m.appendTo(buf[len(buf)-size : len(buf)-size : len(buf)])
	return size, nil
}

// Unmarshal is for the codec's interface; the requester decodes these
// messages as a Response.
func (m *jsonSamples) Unmarshal(b []byte) error {
	var r Response
	if err := r.Unmarshal(b); err != nil {
		return err
	}
	if r.JSON == nil {
		return errors.New("pushdown JSON samples: none in the message")
	}
	m.json, m.n, m.labelsSet = r.JSON, r.Samples, r.LabelsSet
	return nil
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Evaluator)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Eval",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			req := &Request{}
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			return srv.(Evaluator).Eval(stream.Context(), req, streamSender{stream})
		},
	}},
	Metadata: "panorama/federation/pushdown",
}

// Register serves e on s.
func Register(s *grpc.Server, e Evaluator) { s.RegisterService(&serviceDesc, e) }

// Call sends req to the leaf behind cc and hands each response to recv.
func Call(ctx context.Context, cc grpc.ClientConnInterface, req *Request, recv func(*Response) error) error {
	stream, err := cc.NewStream(ctx, &serviceDesc.Streams[0], evalMethod)
	if err != nil {
		return err
	}
	if err := stream.SendMsg(req); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		resp := &Response{}
		if err := stream.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := recv(resp); err != nil {
			return err
		}
	}
}
