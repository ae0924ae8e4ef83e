package elasticsearch

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// retentionLoop deletes expired indices at start and every
// RetentionInterval, until Close.
func (s *Store) retentionLoop() {
	defer close(s.done)
	if s.cfg.Retention <= 0 {
		<-s.stop
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		deleted, err := s.DeleteExpired(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			s.logger.Warn("Deleting expired Elasticsearch indices failed", "err", err)
		} else if len(deleted) > 0 {
			s.logger.Info("Deleted expired Elasticsearch indices", "indices", deleted)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// DeleteExpired deletes the daily indices whose whole day ended more than
// Retention before now, and returns their names. It does nothing when
// Retention is zero.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) ([]string, error) {
	if s.cfg.Retention <= 0 {
		return nil, nil
	}
	patterns := make([]string, 0, len(indexKinds))
	for _, kind := range indexKinds {
		patterns = append(patterns, s.indexPattern(kind))
	}
	res, err := s.do(ctx, esapi.CatIndicesRequest{Index: patterns, Format: "json", H: []string{"index"}})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: list indices: %w", err)
	}
	if err := responseError(res); err != nil {
		return nil, fmt.Errorf("elasticsearch: list indices: %w", err)
	}
	var rows []struct {
		Index string `json:"index"`
	}
	err = json.NewDecoder(res.Body).Decode(&rows)
	res.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: decode index list: %w", err)
	}
	cutoff := now.Add(-s.cfg.Retention)
	var expired []string
	for _, r := range rows {
		for _, kind := range indexKinds {
			day, ok := s.indexDay(kind, r.Index)
			if ok && !day.Add(24*time.Hour).After(cutoff) {
				expired = append(expired, r.Index)
			}
		}
	}
	sort.Strings(expired)
	var deleted []string
	for _, name := range expired {
		res, err := s.do(ctx, esapi.IndicesDeleteRequest{Index: []string{name}})
		if err != nil {
			return deleted, fmt.Errorf("elasticsearch: delete index %s: %w", name, err)
		}
		if res.StatusCode == 404 {
			// Gone already: another Panorama's retention pass was first.
			res.Body.Close()
			continue
		}
		if err := responseError(res); err != nil {
			return deleted, fmt.Errorf("elasticsearch: delete index %s: %w", name, err)
		}
		deleted = append(deleted, name)
	}
	return deleted, nil
}
