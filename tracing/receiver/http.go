package receiver

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	contentProtobuf = "application/x-protobuf"
	contentJSON     = "application/json"
)

// HTTPHandler serves POST /v1/traces: OTLP/HTTP in protobuf or JSON,
// identity or gzip. Errors carry a google.rpc.Status body in the request's
// encoding, as the OTLP specification asks.
func (r *Receiver) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeStatus(w, contentJSON, http.StatusMethodNotAllowed, codes.InvalidArgument, "OTLP/HTTP takes POST")
			return
		}
		ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
		if ct != contentProtobuf && ct != contentJSON {
			writeStatus(w, contentJSON, http.StatusUnsupportedMediaType, codes.InvalidArgument,
				fmt.Sprintf("unsupported Content-Type %q: send %s or %s", req.Header.Get("Content-Type"), contentProtobuf, contentJSON))
			return
		}
		body, status, err := r.readBody(w, req)
		if err != nil {
			r.malformed.WithLabelValues("http").Inc()
			writeStatus(w, ct, status, codes.InvalidArgument, err.Error())
			return
		}
		otlpReq, err := Decode(ct, body)
		if err != nil {
			r.malformed.WithLabelValues("http").Inc()
			writeStatus(w, ct, http.StatusBadRequest, codes.InvalidArgument, err.Error())
			return
		}
		rejected, msg, err := r.accept(otlpReq.Traces(), "http")
		if err != nil {
			w.Header().Set("Retry-After", r.retryAfterSeconds())
			writeStatus(w, ct, http.StatusServiceUnavailable, codes.Unavailable, "span queue is full or failing, retry later: "+err.Error())
			return
		}
		resp := ptraceotlp.NewExportResponse()
		if rejected > 0 {
			resp.PartialSuccess().SetRejectedSpans(rejected)
			resp.PartialSuccess().SetErrorMessage(msg)
		}
		var out []byte
		if ct == contentJSON {
			out, err = resp.MarshalJSON()
		} else {
			out, err = resp.MarshalProto()
		}
		if err != nil {
			writeStatus(w, ct, http.StatusInternalServerError, codes.Internal, err.Error())
			return
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	})
}

// readBody reads at most MaxRequestBytes, decompressed.
func (r *Receiver) readBody(w http.ResponseWriter, req *http.Request) ([]byte, int, error) {
	limit := r.opts.MaxRequestBytes
	var src io.Reader = http.MaxBytesReader(w, req.Body, limit)
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(src)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("gzip body: %w", err)
		}
		defer gz.Close()
		src = gz
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("unsupported Content-Encoding %q: send identity or gzip", enc)
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(src, limit+1))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) || n > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", limit)
	}
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	return buf.Bytes(), 0, nil
}

// Decode parses an OTLP trace export request in the given content type
// (application/x-protobuf or application/json).
func Decode(contentType string, body []byte) (ptraceotlp.ExportRequest, error) {
	req := ptraceotlp.NewExportRequest()
	var err error
	switch contentType {
	case contentJSON:
		err = req.UnmarshalJSON(body)
	case contentProtobuf:
		err = req.UnmarshalProto(body)
	default:
		return req, fmt.Errorf("unsupported content type %q", contentType)
	}
	if err != nil {
		return req, fmt.Errorf("malformed OTLP %s: %w", contentType, err)
	}
	return req, nil
}

// writeStatus answers with a google.rpc.Status in protobuf or JSON.
func writeStatus(w http.ResponseWriter, contentType string, httpCode int, code codes.Code, msg string) {
	st := status.New(code, msg).Proto()
	var (
		b   []byte
		err error
	)
	if contentType == contentProtobuf {
		b, err = proto.Marshal(st)
	} else {
		contentType = contentJSON
		b, err = protojson.Marshal(st)
	}
	if err != nil {
		http.Error(w, msg, httpCode)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(httpCode)
	_, _ = w.Write(b)
}
