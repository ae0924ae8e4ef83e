package receiver

import (
	"context"
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The OTLP trace service is registered by hand, over a codec that hands the
// request bytes to the handler undecoded: gRPC's own decoding answers a
// malformed message with Internal, which OTLP exporters retry forever,
// while the OTLP specification asks for InvalidArgument (not retryable).

// rawMessage is a message the codec leaves encoded.
type rawMessage struct{ data []byte }

// rawCodec passes rawMessage through and encodes everything else (gRPC's
// own messages, if any) as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(*rawMessage); ok {
		return m.data, nil
	}
	pm, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("cannot encode %T", v)
	}
	return proto.Marshal(pm)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	if m, ok := v.(*rawMessage); ok {
		m.data = append([]byte(nil), data...) // gRPC may reuse data
		return nil
	}
	pm, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("cannot decode into %T", v)
	}
	return proto.Unmarshal(data, pm)
}

func (rawCodec) Name() string { return "proto" }

// rawTraceServer is the handler type of traceServiceDesc.
type rawTraceServer interface {
	export(ctx context.Context, body []byte) (*rawMessage, error)
}

var traceServiceDesc = grpc.ServiceDesc{
	ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
	HandlerType: (*rawTraceServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := &rawMessage{}
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(rawTraceServer).export(ctx, in.data)
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "opentelemetry/proto/collector/trace/v1/trace_service.proto",
}

// grpcServer is the OTLP gRPC trace service.
type grpcServer struct{ r *Receiver }

func (g *grpcServer) export(_ context.Context, body []byte) (*rawMessage, error) {
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		g.r.malformed.WithLabelValues("grpc").Inc()
		return nil, status.Error(codes.InvalidArgument, "malformed OTLP ExportTraceServiceRequest: "+err.Error())
	}
	resp := ptraceotlp.NewExportResponse()
	rejected, msg, err := g.r.accept(req.Traces(), "grpc")
	if err != nil {
		// Unavailable is retryable for OTLP exporters.
		return nil, status.Error(codes.Unavailable, "span queue is full or failing, retry later: "+err.Error())
	}
	if rejected > 0 {
		resp.PartialSuccess().SetRejectedSpans(rejected)
		resp.PartialSuccess().SetErrorMessage(msg)
	}
	out, err := resp.MarshalProto()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &rawMessage{data: out}, nil
}
