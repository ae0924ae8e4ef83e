package federation

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/component"
	"github.com/thanos-io/thanos/pkg/info"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metadataLeaf serves only Thanos' Metadata API (as a Thanos sidecar's
// Prometheus would), with a fixed answer, or an error.
type metadataLeaf struct {
	metas map[string][]metadatapb.Meta
	fail  bool
}

func (l *metadataLeaf) MetricMetadata(r *metadatapb.MetricMetadataRequest, srv metadatapb.Metadata_MetricMetadataServer) error {
	if l.fail {
		return status.Error(codes.Unavailable, "leaf metadata down")
	}
	m := &metadatapb.MetricMetadata{Metadata: map[string]metadatapb.MetricMetadataEntry{}}
	for name, ms := range l.metas {
		if r.Metric != "" && r.Metric != name {
			continue
		}
		m.Metadata[name] = metadatapb.MetricMetadataEntry{Metas: ms}
	}
	return srv.Send(metadatapb.NewMetricMetadataResponse(m))
}

func startMetadataLeaf(t *testing.T, ext labels.Labels, l *metadataLeaf) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	metadatapb.RegisterMetadataServer(srv, l)
	info.RegisterInfoServer(info.NewInfoServer(component.Sidecar.String(),
		info.WithLabelSetFunc(func() []labelpb.ZLabelSet { return labelpb.ZLabelSetsFromPromLabels(ext) }),
		info.WithMetricMetadataInfoFunc(func() *infopb.MetricMetadataInfo { return &infopb.MetricMetadataInfo{} }),
	))(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// TestMetadata: /api/v1/metadata fans out Thanos' Metadata API with
// Prometheus' parameters and shape, deduplicates across leaves, warns
// about a failing leaf, and is served over gRPC to the next level up.
func TestMetadata(t *testing.T) {
	reqs := metadatapb.Meta{Type: "counter", Help: "Requests.", Unit: ""}
	east := startMetadataLeaf(t, labels.FromStrings("cluster", "east"), &metadataLeaf{metas: map[string][]metadatapb.Meta{
		"http_requests_total": {reqs},
		"up":                  {{Type: "gauge", Help: "Up."}},
	}})
	west := startMetadataLeaf(t, labels.FromStrings("cluster", "west"), &metadataLeaf{metas: map[string][]metadatapb.Meta{
		"http_requests_total": {reqs, {Type: "counter", Help: "All requests."}},
		"node_load1":          {{Type: "gauge", Help: "Load."}},
	}})
	broken := startMetadataLeaf(t, labels.FromStrings("cluster", "north"), &metadataLeaf{fail: true})
	fed := startFederator(t, testOptions(east, west, broken))

	type meta struct{ Type, Help, Unit string }
	decode := func(r apiResponse) map[string][]meta {
		t.Helper()
		var m map[string][]meta
		if err := json.Unmarshal(r.Data, &m); err != nil {
			t.Fatalf("%v: %s", err, r.Data)
		}
		return m
	}
	want := map[string][]meta{
		"http_requests_total": {{"counter", "Requests.", ""}, {"counter", "All requests.", ""}},
		"up":                  {{"gauge", "Up.", ""}},
		"node_load1":          {{"gauge", "Load.", ""}},
	}
	r := get(t, fed.url, "/api/v1/metadata", nil)
	if r.Status != "success" || !reflect.DeepEqual(decode(r), want) {
		t.Errorf("metadata: %s %s, want %v", r.Status, r.Data, want)
	}
	if len(r.Warnings) != 1 {
		t.Errorf("metadata: warnings %q, want one for the failing leaf", r.Warnings)
	}
	r = get(t, fed.url, "/api/v1/metadata", url.Values{"metric": {"http_requests_total"}, "limit_per_metric": {"1"}})
	if got := decode(r); len(got) != 1 || len(got["http_requests_total"]) != 1 {
		t.Errorf("metric=http_requests_total&limit_per_metric=1: %s", r.Data)
	}
	r = get(t, fed.url, "/api/v1/metadata", url.Values{"limit": {"2"}})
	if got := decode(r); len(got) != 2 {
		t.Errorf("limit=2: %s", r.Data)
	}
	if r := get(t, fed.url, "/api/v1/metadata", url.Values{"limit": {"x"}}); r.code != 400 || r.ErrorType != "bad_data" {
		t.Errorf("limit=x: %d %s %s, want 400 bad_data", r.code, r.ErrorType, r.Error)
	}
	if r := get(t, fed.url, "/api/v1/metadata", url.Values{"partial_response": {"false"}}); r.code != 422 || r.ErrorType != "execution" {
		t.Errorf("partial_response=false with a failing leaf: %d %s %s, want 422 execution", r.code, r.ErrorType, r.Error)
	}

	// One level up, over the first federator's gRPC Metadata API.
	top := startFederator(t, testOptions(fed.f.GRPCAddr()))
	eventually(t, 10*time.Second, func() error {
		r := get(t, top.url, "/api/v1/metadata", nil)
		if got := decode(r); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("upper federator: %s, want %v", r.Data, want)
		}
		return nil
	})
}
