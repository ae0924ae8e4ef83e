package federation

import (
	"context"
	"errors"

	"github.com/prometheus/prometheus/promql"
)

// concurrencyLimit is the engine's query tracker for --query.max-concurrent:
// a query waits for a free slot within its own timeout, and one that times
// out waiting fails with "query timed out in query queue". (Prometheus' engine
// also queues while it parses a query, and its API answers a timeout there
// as 400 bad_data on the query parameter; the federator keeps that.)
// Unlike Prometheus' tracker it keeps no file of active queries, since the
// federator has no data directory.
type concurrencyLimit struct {
	slots chan struct{}
}

func newConcurrencyLimit(n int) *concurrencyLimit {
	return &concurrencyLimit{slots: make(chan struct{}, n)}
}

func (c *concurrencyLimit) GetMaxConcurrent() int { return cap(c.slots) }

func (c *concurrencyLimit) Insert(ctx context.Context, _ string) (int, error) {
	select {
	case c.slots <- struct{}{}:
		return 0, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return 0, promql.ErrQueryCanceled("query queue")
		}
		return 0, promql.ErrQueryTimeout("query queue")
	}
}

func (c *concurrencyLimit) Delete(int) { <-c.slots }

func (c *concurrencyLimit) Close() error { return nil }
