package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/panorama-obs/panorama/rca/online"
)

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 11, 23, 4, 40, 15, 0, time.UTC)
	for _, in := range []string{"2026-11-23T04:40:15Z", "2026-11-23T05:40:15+01:00", "1795408815", "1795408815.000"} {
		got, err := parseTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "2026-11-23 04:40", "-5", "1e20"} {
		if _, err := parseTime(in); err == nil {
			t.Errorf("parseTime(%q) accepted", in)
		}
	}
}

func TestRCACaptureErrors(t *testing.T) {
	topo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"nodes": [{"id": "cluster/east", "kind": "cluster"}], "edges": []}`))
	}))
	defer topo.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	for _, tc := range []struct {
		cfg  online.Config
		at   string
		want string
	}{
		{online.Config{FederatorURL: down.URL, TopologyURLs: []string{topo.URL}}, "now", "--at: \"now\": not RFC 3339"},
		{online.Config{FederatorURL: down.URL, TopologyURLs: []string{topo.URL}}, "1795409415", "cannot reach the federator " + down.URL},
		{online.Config{FederatorURL: down.URL, TopologyURLs: []string{down.URL}}, "1795409415", "topology " + down.URL},
	} {
		var stdout, stderr bytes.Buffer
		err := runRCACapture(tc.cfg, tc.at, "", "-", &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}

func TestProgressOnlyWhenATerminalOrAsked(t *testing.T) {
	var quiet, asked bytes.Buffer
	for _, p := range []*progress{newProgress(&quiet, "eval", 4, false), newProgress(&asked, "eval", 4, true)} {
		for i := 1; i <= 4; i++ {
			p.set(i)
		}
		p.done()
	}
	if quiet.Len() != 0 {
		t.Errorf("progress written to a non-terminal without --progress: %q", quiet.String())
	}
	if !strings.Contains(asked.String(), "eval: 4/4 (100%)") {
		t.Errorf("progress with --progress: %q", asked.String())
	}
}
