package collector

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
)

var startTime = time.Now()

func cwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "<unknown>"
	}
	return wd
}

func filepathGlob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

// tsdbAdmin gives the Prometheus API the TSDB status it shows at
// /api/v1/status/tsdb and /api/v1/status/walreplay. The admin endpoints
// (delete, snapshot) stay disabled, as in Prometheus by default.
type tsdbAdmin struct {
	db    *tsdb.DB
	stats *tsdb.DBStats
}

func (a tsdbAdmin) CleanTombstones() error { return a.db.CleanTombstones() }
func (a tsdbAdmin) Delete(ctx context.Context, mint, maxt int64, ms ...*labels.Matcher) error {
	return a.db.Delete(ctx, mint, maxt, ms...)
}
func (a tsdbAdmin) Snapshot(dir string, withHead bool) error { return a.db.Snapshot(dir, withHead) }
func (a tsdbAdmin) Stats(statsByLabelName string, limit int) (*tsdb.Stats, error) {
	return a.db.Head().Stats(statsByLabelName, limit), nil
}
func (a tsdbAdmin) WALReplayStatus() (tsdb.WALReplayStatus, error) {
	return a.stats.Head.WALReplayStatus.GetWALReplayStatus(), nil
}
func (a tsdbAdmin) BlockMetas() ([]tsdb.BlockMeta, error) { return a.db.BlockMetas(), nil }
