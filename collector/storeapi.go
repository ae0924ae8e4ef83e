package collector

import (
	"context"
	"log/slog"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/thanos/pkg/component"
	"github.com/thanos-io/thanos/pkg/info"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"google.golang.org/grpc"

	"github.com/panorama-obs/panorama/internal/grpctls"
	"github.com/panorama-obs/panorama/internal/server"

	// Registers Thanos' gRPC codec for its gogo-protobuf messages.
	_ "github.com/thanos-io/thanos/pkg/extgrpc"
)

// storeServer serves the TSDB over Thanos' StoreAPI (Info, Series,
// LabelNames, LabelValues) through Thanos' own TSDBStore, so that a
// federator or a real Thanos Querier can query it. The TSDBStore reads
// through the same external-labels layer as the collector's HTTP API, so
// both show the same series: a series' own label wins over an external
// label of the same name, as in Prometheus' federation and remote write
// (Thanos' sidecar would overwrite it instead). Info advertises every
// combination of external-label values the stored series can have, so a
// querier that prunes stores by their label sets still finds them.
type storeServer struct {
	logger *slog.Logger
	srv    *grpc.Server
	lis    net.Listener
}

// attachedTSDB is the TSDB as TSDBStore reads it: chunks with the external
// labels attached.
type attachedTSDB struct {
	*externalLabelsQueryable
	db *tsdb.DB
}

func (a attachedTSDB) StartTime() (int64, error) { return a.db.StartTime() }

func newStoreServer(logger *slog.Logger, db *tsdb.DB, ext labels.Labels, tlsCfg grpctls.ServerConfig) (*storeServer, error) {
	gl := server.GoKitLogger(logger.With("component", "storeapi"))
	q := newExternalLabelsQueryable(db, ext)
	// No external labels for TSDBStore itself: they are on the series.
	tsdbStore := store.NewTSDBStore(gl, attachedTSDB{q, db}, component.Sidecar, labels.EmptyLabels())
	sets := &labelSetCache{q: q}
	infoSrv := info.NewInfoServer(component.Sidecar.String(),
		info.WithLabelSetFunc(func() []labelpb.ZLabelSet { return labelpb.ZLabelSetsFromPromLabels(sets.get()...) }),
		info.WithStoreInfoFunc(func() (*infopb.StoreInfo, error) {
			mint, maxt := tsdbStore.TimeRange()
			var infos []infopb.TSDBInfo
			for _, ls := range sets.get() {
				infos = append(infos, infopb.TSDBInfo{Labels: labelpb.ZLabelSet{Labels: labelpb.ZLabelsFromPromLabels(ls)}, MinTime: mint, MaxTime: maxt})
			}
			return &infopb.StoreInfo{
				MinTime:                      mint,
				MaxTime:                      maxt,
				SupportsSharding:             true,
				SupportsWithoutReplicaLabels: true,
				TsdbInfos:                    infos,
			}, nil
		}),
	)
	srv, err := grpctls.NewServer(logger.With("component", "storeapi"), tlsCfg)
	if err != nil {
		return nil, err
	}
	store.RegisterStoreServer(tsdbStore, gl)(srv)
	info.RegisterInfoServer(infoSrv)(srv)
	return &storeServer{logger: logger, srv: srv}, nil
}

// maxLabelSets bounds the label sets Info advertises; past it, Info
// advertises none, which a querier reads as "may hold anything".
const maxLabelSets = 64

// labelSetCache computes the label sets Info advertises at most every few
// seconds: Thanos queriers and federators ask on every refresh.
type labelSetCache struct {
	q *externalLabelsQueryable

	mtx     sync.Mutex
	at      time.Time
	current []labels.Labels
}

func (c *labelSetCache) get() []labels.Labels {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if c.current == nil || time.Since(c.at) > 5*time.Second {
		c.current = c.q.labelSets(context.Background())
		c.at = time.Now()
	}
	return c.current
}

// labelSets is every combination of the external label names' values that
// a served series can carry: the external value, and the values stored
// series carry themselves (which win). It is a superset of what the series
// show, which is what pruning by label sets needs.
func (q *externalLabelsQueryable) labelSets(ctx context.Context) []labels.Labels {
	if q.ext.IsEmpty() {
		return nil
	}
	sets := []labels.Labels{labels.EmptyLabels()}
	lq, err := q.SampleAndChunkQueryable.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return []labels.Labels{q.ext}
	}
	defer lq.Close()
	for _, e := range q.extList {
		own, _, err := lq.LabelValues(ctx, e.Name, nil)
		if err != nil {
			return []labels.Labels{q.ext}
		}
		values := append([]string{e.Value}, own...)
		slices.Sort(values)
		values = slices.Compact(values)
		if len(sets)*len(values) > maxLabelSets {
			return []labels.Labels{}
		}
		var next []labels.Labels
		for _, base := range sets {
			for _, v := range values {
				b := labels.NewBuilder(base)
				b.Set(e.Name, v)
				next = append(next, b.Labels())
			}
		}
		sets = next
	}
	return sets
}

// ServeListener serves on an existing listener.
func (s *storeServer) ServeListener(l net.Listener) error {
	s.lis = l
	s.logger.Info("Serving StoreAPI", "address", l.Addr().String())
	return s.srv.Serve(l)
}

// Stop stops serving.
func (s *storeServer) Stop() { s.srv.Stop() }
