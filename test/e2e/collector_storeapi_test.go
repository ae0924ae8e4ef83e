package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	// Thanos' gRPC codec for its gogo-protobuf messages.
	_ "github.com/thanos-io/thanos/pkg/extgrpc"
)

// TestCollectorStoreAPI talks to the collector's --grpc-address as a Thanos
// Querier would: Info, Series, LabelNames and LabelValues, all carrying
// the cluster external label.
func TestCollectorStoreAPI(t *testing.T) {
	t.Parallel()
	const cluster = "store-test"
	col := StartCollector(t, `
global:
  external_labels:
    cluster: `+cluster+`
scrape_configs: []
`, CollectorOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Known samples: 3 series × 30 samples, 5 s apart.
	base := time.Now().Add(-5 * time.Minute).Truncate(time.Second)
	want := map[string][]prompb.Sample{}
	var series []prompb.TimeSeries
	for i := 0; i < 3; i++ {
		s := prompb.TimeSeries{Labels: lbls("__name__", "store_demo", "job", "store", "instance", "i-"+strconv.Itoa(i))}
		for k := 0; k < 30; k++ {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: base.Add(time.Duration(k) * 5 * time.Second).UnixMilli(), Value: float64(i*100+k) + 0.125})
		}
		want["i-"+strconv.Itoa(i)] = s.Samples
		series = append(series, s)
	}
	other := prompb.TimeSeries{Labels: lbls("__name__", "other_metric", "job", "other", "instance", "x"), Samples: []prompb.Sample{{Timestamp: base.UnixMilli(), Value: 1}}}
	if res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", append(series, other)); err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}

	conn, err := grpc.NewClient(col.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	store := storepb.NewStoreClient(conn)
	minT, maxT := base.Add(-time.Minute).UnixMilli(), time.Now().UnixMilli()

	t.Run("Info", func(t *testing.T) {
		info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var sets []string
		for _, ls := range info.LabelSets {
			sets = append(sets, labelpb.ZLabelsToPromLabels(ls.Labels).String())
		}
		if len(sets) != 1 || sets[0] != `{cluster="`+cluster+`"}` {
			t.Errorf("Info label sets: %v, want [{cluster=%q}]", sets, cluster)
		}
		if info.Store == nil {
			t.Fatal("Info has no store part")
		}
		if info.Store.MinTime > base.UnixMilli() || info.Store.MaxTime < base.Add(145*time.Second).UnixMilli() {
			t.Errorf("Info store time range [%d, %d] does not cover the data [%d, %d]", info.Store.MinTime, info.Store.MaxTime, base.UnixMilli(), base.Add(145*time.Second).UnixMilli())
		}
	})

	t.Run("Series", func(t *testing.T) {
		got := readSeries(t, ctx, store, &storepb.SeriesRequest{
			MinTime:  minT,
			MaxTime:  maxT,
			Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "store_demo"}},
		})
		if len(got) != 3 {
			t.Fatalf("Series: %d series, want 3: %v", len(got), keys(got))
		}
		for lset, samples := range got {
			inst := ""
			for _, l := range []string{"i-0", "i-1", "i-2"} {
				if lset == `{__name__="store_demo", cluster="`+cluster+`", instance="`+l+`", job="store"}` {
					inst = l
				}
			}
			if inst == "" {
				t.Errorf("Series: unexpected labels %s (want cluster=%q attached)", lset, cluster)
				continue
			}
			if !slices.EqualFunc(samples, want[inst], func(a, b prompb.Sample) bool { return a.Timestamp == b.Timestamp && a.Value == b.Value }) {
				t.Errorf("Series %s: samples %v, want %v", lset, samples, want[inst])
			}
		}
	})

	t.Run("Series matching the external label", func(t *testing.T) {
		got := readSeries(t, ctx, store, &storepb.SeriesRequest{MinTime: minT, MaxTime: maxT, Matchers: []storepb.LabelMatcher{
			{Type: storepb.LabelMatcher_EQ, Name: "cluster", Value: cluster},
			{Type: storepb.LabelMatcher_EQ, Name: "job", Value: "store"},
		}})
		if len(got) != 3 {
			t.Errorf("cluster=%q, job=store: %d series, want 3: %v", cluster, len(got), keys(got))
		}
		got = readSeries(t, ctx, store, &storepb.SeriesRequest{MinTime: minT, MaxTime: maxT, Matchers: []storepb.LabelMatcher{
			{Type: storepb.LabelMatcher_EQ, Name: "cluster", Value: "elsewhere"},
			{Type: storepb.LabelMatcher_EQ, Name: "job", Value: "store"},
		}})
		if len(got) != 0 {
			t.Errorf("cluster=elsewhere: %d series, want none: %v", len(got), keys(got))
		}
	})

	t.Run("LabelNames", func(t *testing.T) {
		r, err := store.LabelNames(ctx, &storepb.LabelNamesRequest{Start: minT, End: maxT})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"__name__", "cluster", "instance", "job"} {
			if !slices.Contains(r.Names, n) {
				t.Errorf("LabelNames %v lacks %s", r.Names, n)
			}
		}
	})

	t.Run("LabelValues", func(t *testing.T) {
		for label, wantValues := range map[string][]string{
			"job":      {"other", "store"},
			"instance": {"i-0", "i-1", "i-2", "x"},
			"cluster":  {cluster},
			"__name__": {"other_metric", "store_demo"},
		} {
			r, err := store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: label, Start: minT, End: maxT})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Values, wantValues) {
				t.Errorf("LabelValues(%s): %v, want %v", label, r.Values, wantValues)
			}
		}
		r, err := store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "instance", Start: minT, End: maxT,
			Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "job", Value: "other"}}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Values, []string{"x"}) {
			t.Errorf("LabelValues(instance, job=other): %v, want [x]", r.Values)
		}
	})
}

// TestCollectorStoreAPIOwnLabelWins: a series that carries the external
// label's name itself (remote-written by another Prometheus, say) keeps its
// own value on both APIs, and Info advertises that value too, so a querier
// pruning by label sets still finds it.
func TestCollectorStoreAPIOwnLabelWins(t *testing.T) {
	t.Parallel()
	col := StartCollector(t, `
global:
  external_labels:
    cluster: east
scrape_configs: []
`, CollectorOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts := time.Now().Add(-time.Minute).Truncate(time.Second)
	series := []prompb.TimeSeries{
		{Labels: lbls("__name__", "own_demo", "job", "a"), Samples: []prompb.Sample{{Timestamp: ts.UnixMilli(), Value: 1}}},
		{Labels: lbls("__name__", "own_demo", "cluster", "legacy", "job", "b"), Samples: []prompb.Sample{{Timestamp: ts.UnixMilli(), Value: 2}}},
	}
	if res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", series); err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}
	conn, err := grpc.NewClient(col.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	store := storepb.NewStoreClient(conn)
	minT, maxT := ts.Add(-time.Minute).UnixMilli(), time.Now().UnixMilli()

	wantAll := []string{
		`{__name__="own_demo", cluster="east", job="a"}`,
		`{__name__="own_demo", cluster="legacy", job="b"}`,
	}
	for _, tc := range []struct {
		matchers []storepb.LabelMatcher
		want     []string
	}{
		{[]storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "own_demo"}}, wantAll},
		{[]storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "cluster", Value: "legacy"}}, wantAll[1:]},
		{[]storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "cluster", Value: "east"}, {Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "own_demo"}}, wantAll[:1]},
		{[]storepb.LabelMatcher{{Type: storepb.LabelMatcher_NEQ, Name: "cluster", Value: "east"}, {Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "own_demo"}}, wantAll[1:]},
	} {
		got := keys(readSeries(t, ctx, store, &storepb.SeriesRequest{MinTime: minT, MaxTime: maxT, Matchers: tc.matchers}))
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("StoreAPI Series %v: %v, want %v", tc.matchers, got, tc.want)
		}
	}

	// The HTTP API shows the same series.
	v, err := col.API.Vector(ctx, `own_demo`, ts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range v {
		got = append(got, labels.FromMap(s.Metric).String())
	}
	slices.Sort(got)
	if !slices.Equal(got, wantAll) {
		t.Errorf("HTTP API own_demo: %v, want %v", got, wantAll)
	}

	r, err := store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "cluster", Start: minT, End: maxT})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Values, []string{"east", "legacy"}) {
		t.Errorf("LabelValues(cluster): %v, want [east legacy]", r.Values)
	}
	r, err = store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "cluster", Start: minT, End: maxT,
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "job", Value: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Values, []string{"legacy"}) {
		t.Errorf("LabelValues(cluster, job=b): %v, want [legacy]", r.Values)
	}

	info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var sets []string
	for _, ls := range info.LabelSets {
		sets = append(sets, labelpb.ZLabelsToPromLabels(ls.Labels).String())
	}
	slices.Sort(sets)
	if want := []string{`{cluster="east"}`, `{cluster="legacy"}`}; !slices.Equal(sets, want) {
		t.Errorf("Info label sets: %v, want %v", sets, want)
	}
}

// readSeries calls Series and decodes every chunk: label set (as
// Prometheus prints it) to samples.
func readSeries(t *testing.T, ctx context.Context, store storepb.StoreClient, req *storepb.SeriesRequest) map[string][]prompb.Sample {
	t.Helper()
	stream, err := store.Series(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]prompb.Sample{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Series: %v", err)
		}
		if w := resp.GetWarning(); w != "" {
			t.Errorf("Series warning: %s", w)
		}
		s := resp.GetSeries()
		if s == nil {
			continue
		}
		key := labelpb.ZLabelsToPromLabels(s.Labels).String()
		for _, c := range s.Chunks {
			if c.Raw == nil || c.Raw.Type != storepb.Chunk_XOR {
				t.Fatalf("series %s: chunk %v, want raw XOR", key, c)
			}
			ch, err := chunkenc.FromData(chunkenc.EncXOR, c.Raw.Data)
			if err != nil {
				t.Fatal(err)
			}
			it := ch.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, v := it.At()
				out[key] = append(out[key], prompb.Sample{Timestamp: ts, Value: v})
			}
			if it.Err() != nil {
				t.Fatal(it.Err())
			}
		}
	}
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
