package collector

import (
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/thanos/pkg/component"
	"github.com/thanos-io/thanos/pkg/info"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/panorama-obs/panorama/internal/server"

	// Registers Thanos' gRPC codec for its gogo-protobuf messages.
	_ "github.com/thanos-io/thanos/pkg/extgrpc"
)

// storeServer serves the TSDB over Thanos' StoreAPI (Info, Series,
// LabelNames, LabelValues) with the external labels, through Thanos' own
// TSDBStore, so that a federator or a real Thanos Querier can query it.
type storeServer struct {
	logger *slog.Logger
	srv    *grpc.Server
	lis    net.Listener
}

func newStoreServer(logger *slog.Logger, db *tsdb.DB, ext labels.Labels) (*storeServer, error) {
	gl := server.GoKitLogger(logger.With("component", "storeapi"))
	tsdbStore := store.NewTSDBStore(gl, db, component.Sidecar, ext)
	infoSrv := info.NewInfoServer(component.Sidecar.String(),
		info.WithLabelSetFunc(func() []labelpb.ZLabelSet { return tsdbStore.LabelSet() }),
		info.WithStoreInfoFunc(func() (*infopb.StoreInfo, error) {
			mint, maxt := tsdbStore.TimeRange()
			return &infopb.StoreInfo{
				MinTime:                      mint,
				MaxTime:                      maxt,
				SupportsSharding:             true,
				SupportsWithoutReplicaLabels: true,
				TsdbInfos:                    tsdbStore.TSDBInfos(),
			}, nil
		}),
	)
	srv := grpc.NewServer(grpc.MaxSendMsgSize(math.MaxInt32), grpc.MaxRecvMsgSize(math.MaxInt32),
		// Thanos clients ping idle streams every 10 s; grpc-go's default
		// policy would answer that with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	store.RegisterStoreServer(tsdbStore, gl)(srv)
	info.RegisterInfoServer(infoSrv)(srv)
	return &storeServer{logger: logger, srv: srv}, nil
}

// ServeListener serves on an existing listener.
func (s *storeServer) ServeListener(l net.Listener) error {
	s.lis = l
	s.logger.Info("Serving StoreAPI", "address", l.Addr().String())
	return s.srv.Serve(l)
}

// Stop stops serving.
func (s *storeServer) Stop() { s.srv.Stop() }
