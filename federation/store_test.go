package federation

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestStoreAPIExternalLabels: a federator's StoreAPI attaches its --label
// to every series, overriding a series' own label of that name as Thanos'
// sidecar does, keeps the stream sorted (which overriding can break), and
// leaves out a label the request names as a replica label.
func TestStoreAPIExternalLabels(t *testing.T) {
	series := func(region, z string) testSeries {
		return testSeries{
			lset:    labels.FromStrings("__name__", "x", "region", region, "z", z),
			samples: []sample{{ts(0), 1}, {ts(1), 2}},
		}
	}
	// Sorted by their own labels, z="2" (region="aa") comes first; with
	// region overridden, z="1" must.
	leaf := startLeaf(t, labels.FromStrings("cluster", "east"), []testSeries{series("aa", "2"), series("zz", "1")})
	opts := testOptions(leaf.addr)
	opts.ExternalLabels = labels.FromStrings("region", "eu", "replica", "r1")
	fed := startFederator(t, opts)

	conn, err := grpc.NewClient(fed.f.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := storepb.NewStoreClient(conn)
	read := func(req *storepb.SeriesRequest) []string {
		t.Helper()
		stream, err := client.Series(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := r.GetSeries(); s != nil {
				out = append(out, labelpb.ZLabelsToPromLabels(s.Labels).String())
			}
			if b := r.GetBatch(); b != nil {
				for _, s := range b.Series {
					out = append(out, labelpb.ZLabelsToPromLabels(s.Labels).String())
				}
			}
			if w := r.GetWarning(); w != "" {
				t.Errorf("warning: %s", w)
			}
		}
	}
	req := &storepb.SeriesRequest{
		MinTime:  ts(0),
		MaxTime:  ts(10),
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "x"}},
	}
	want := []string{
		`{__name__="x", cluster="east", region="eu", replica="r1", z="1"}`,
		`{__name__="x", cluster="east", region="eu", replica="r1", z="2"}`,
	}
	if got := read(req); !slices.Equal(got, want) {
		t.Errorf("series:\ngot  %q\nwant %q", got, want)
	}

	req.WithoutReplicaLabels = []string{"replica"}
	req.ResponseBatchSize = 10
	want = []string{`{__name__="x", cluster="east", region="eu", z="1"}`, `{__name__="x", cluster="east", region="eu", z="2"}`}
	if got := read(req); !slices.Equal(got, want) {
		t.Errorf("series without replica labels, batched:\ngot  %q\nwant %q", got, want)
	}

	// Only the external labels in the matchers: still a valid selection.
	req = &storepb.SeriesRequest{MinTime: ts(0), MaxTime: ts(10), SkipChunks: true,
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "region", Value: "eu"}}}
	if got := read(req); len(got) != 2 {
		t.Errorf(`{region="eu"}: %q`, got)
	}
	req.Matchers[0].Value = "us"
	if got := read(req); len(got) != 0 {
		t.Errorf(`{region="us"}: %q, want nothing`, got)
	}

	names, err := client.LabelNames(context.Background(), &storepb.LabelNamesRequest{Start: ts(0), End: ts(10)})
	if err != nil || !slices.Equal(names.Names, []string{"__name__", "cluster", "region", "replica", "z"}) {
		t.Errorf("label names: %v %v", names, err)
	}
	vals, err := client.LabelValues(context.Background(), &storepb.LabelValuesRequest{Label: "region", Start: ts(0), End: ts(10)})
	if err != nil || !slices.Equal(vals.Values, []string{"eu"}) {
		t.Errorf("region values: %v %v", vals, err)
	}
	vals, err = client.LabelValues(context.Background(), &storepb.LabelValuesRequest{Label: "region", Start: ts(0), End: ts(10),
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "nothing"}}})
	if err != nil || len(vals.Values) != 0 {
		t.Errorf("region values of no series: %v %v", vals, err)
	}
}
