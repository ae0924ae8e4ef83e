package online

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/panorama-obs/panorama/topology"
)

// maxTopologyBytes bounds a topology answer (a 10,000-node cluster is a few
// megabytes).
const maxTopologyBytes = 256 << 20

// FetchTopology reads one topology endpoint: a bare topology block
// ({"nodes","edges"}, as collectors and tracing serve it) or one wrapped in
// a Prometheus-style {"status":"success","data":{…}}. Edges may name nodes
// the block does not list (a traced call to a service another endpoint
// knows). Errors name the URL and, for a bad block, the field and line.
func FetchTopology(ctx context.Context, client *http.Client, url string) (*topology.Graph, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTopologyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("topology %s: read: %w", url, err)
	}
	if len(body) > maxTopologyBytes {
		return nil, fmt.Errorf("topology %s: answer larger than %d MiB", url, maxTopologyBytes>>20)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("topology %s: HTTP %s: %s", url, resp.Status, firstLine(body))
	}
	var wrapped struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &wrapped) == nil && wrapped.Status != "" && len(wrapped.Data) > 0 {
		body = wrapped.Data
	}
	g, err := topology.DecodeWith(bytes.NewReader(body), topology.DecodeOptions{ImplicitNodes: true})
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", url, err)
	}
	return g, nil
}

func firstLine(b []byte) string {
	b = bytes.TrimSpace(b)
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 200 {
		b = append(b[:200:200], "…"...)
	}
	return string(b)
}
