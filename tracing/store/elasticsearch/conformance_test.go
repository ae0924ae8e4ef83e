package elasticsearch_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	es "github.com/elastic/go-elasticsearch/v8"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch/estest"
	"github.com/panorama-obs/panorama/tracing/store/storetest"
)

// newStore returns a store on the fake, closed when the test ends.
func newStore(t *testing.T, fake *estest.Server, mutate ...func(*elasticsearch.Config)) *elasticsearch.Store {
	t.Helper()
	cfg := elasticsearch.DefaultConfig()
	cfg.ServerURLs = []string{fake.URL}
	cfg.BulkBackoff = time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := elasticsearch.New(context.Background(), cfg, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		fake := estest.New(t)
		t.Cleanup(func() { fake.CheckSupported(t) })
		return newStore(t, fake)
	})
}

// TestConformanceSmallPages runs the suite with search pages of three hits,
// so that every read pages with search_after.
func TestConformanceSmallPages(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		fake := estest.New(t)
		t.Cleanup(func() { fake.CheckSupported(t) })
		return newStore(t, fake, func(c *elasticsearch.Config) { c.PageSize = 3; c.BulkMaxBytes = 2000 })
	})
}

// TestConformanceRealCluster runs the suite against a real Elasticsearch
// when PANORAMA_TEST_ELASTICSEARCH_URL is set. Each store gets its own
// index prefix, and its indices and templates are deleted afterwards.
func TestConformanceRealCluster(t *testing.T) {
	url := os.Getenv("PANORAMA_TEST_ELASTICSEARCH_URL")
	if url == "" {
		t.Skip("set PANORAMA_TEST_ELASTICSEARCH_URL (and optionally PANORAMA_TEST_ELASTICSEARCH_USERNAME/PASSWORD) to run the conformance suite against a real cluster")
	}
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++
		cfg := elasticsearch.DefaultConfig()
		cfg.ServerURLs = []string{url}
		cfg.IndexPrefix = fmt.Sprintf("panorama-test-%d-%d", time.Now().UnixNano(), n)
		cfg.Shards, cfg.Replicas = 1, 0
		// Reads right after writes: make each write searchable before it
		// returns.
		cfg.Refresh = "wait_for"
		cfg.Username = os.Getenv("PANORAMA_TEST_ELASTICSEARCH_USERNAME")
		if pw := os.Getenv("PANORAMA_TEST_ELASTICSEARCH_PASSWORD"); pw != "" {
			f := filepath.Join(t.TempDir(), "password")
			if err := os.WriteFile(f, []byte(pw), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.PasswordFile = f
		}
		cfg.TLS.InsecureSkipVerify = os.Getenv("PANORAMA_TEST_ELASTICSEARCH_INSECURE") != ""
		s, err := elasticsearch.New(context.Background(), cfg, nil, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() {
			if err := deleteTestIndices(url, cfg.IndexPrefix); err != nil {
				t.Logf("clean up %s-*: %v", cfg.IndexPrefix, err)
			}
		})
		return s
	})
}

// deleteTestIndices removes the indices and templates of a test prefix from
// a real cluster, naming each index (wildcard deletes are refused by
// default since Elasticsearch 8).
func deleteTestIndices(url, prefix string) error {
	c, err := es.NewClient(es.Config{
		Addresses: []string{url},
		Username:  os.Getenv("PANORAMA_TEST_ELASTICSEARCH_USERNAME"),
		Password:  os.Getenv("PANORAMA_TEST_ELASTICSEARCH_PASSWORD"),
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: os.Getenv("PANORAMA_TEST_ELASTICSEARCH_INSECURE") != ""}}, //nolint:gosec // test clusters
	})
	if err != nil {
		return err
	}
	res, err := c.Cat.Indices(c.Cat.Indices.WithIndex(prefix+"-*"), c.Cat.Indices.WithFormat("json"), c.Cat.Indices.WithH("index"))
	if err != nil {
		return err
	}
	var rows []struct {
		Index string `json:"index"`
	}
	err = json.NewDecoder(res.Body).Decode(&rows)
	res.Body.Close()
	if err != nil {
		return err
	}
	for _, r := range rows {
		if res, err := c.Indices.Delete([]string{r.Index}); err == nil {
			res.Body.Close()
		}
	}
	for _, kind := range []string{"span", "service", "dependencies"} {
		if res, err := c.Indices.DeleteIndexTemplate(prefix + "-" + kind); err == nil {
			res.Body.Close()
		}
	}
	return nil
}
