package federation

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

func endpointNames(f *Federator) []string {
	var out []string
	for _, st := range f.Endpoints() {
		out = append(out, st.Name)
	}
	slices.Sort(out)
	return out
}

// TestEndpointSDFile: endpoints listed in a Prometheus file_sd file are
// picked up at start, and added and removed when the file changes.
func TestEndpointSDFile(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), workload(2))
	file := filepath.Join(t.TempDir(), "endpoints.json")
	write := func(addrs ...string) {
		t.Helper()
		b, _ := json.Marshal([]map[string]any{{"targets": addrs}})
		// Write then rename, as config management does, so that the
		// watcher never reads half a file.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write(le.addr)
	opts := testOptions()
	opts.EndpointSDFiles = []string{file}
	fed := startFederator(t, opts)

	if got := endpointNames(fed.f); !slices.Equal(got, []string{le.addr}) {
		t.Fatalf("at start: endpoints %q, want %q", got, le.addr)
	}
	mustSucceed(t, "east", get(t, fed.url, "/api/v1/query", instant(`up`)))

	write(le.addr, lw.addr)
	want := []string{le.addr, lw.addr}
	slices.Sort(want)
	eventually(t, 10*time.Second, func() error {
		if got := endpointNames(fed.f); !slices.Equal(got, want) {
			return fmt.Errorf("after adding west: endpoints %q", got)
		}
		if got := get(t, fed.url, "/api/v1/query", instant(`up`)).result(t).metrics(); len(got) != 4 {
			return fmt.Errorf("after adding west: up %q", got)
		}
		return nil
	})

	write(lw.addr)
	eventually(t, 10*time.Second, func() error {
		if got := endpointNames(fed.f); !slices.Equal(got, []string{lw.addr}) {
			return fmt.Errorf("after removing east: endpoints %q", got)
		}
		return nil
	})
	r := get(t, fed.url, "/api/v1/query", instant(`up`))
	mustSucceed(t, "west only", r)
	if got := r.result(t).metrics(); len(got) != 2 {
		t.Errorf("after removing east: up %q", got)
	}

	// A dns+ name in the file is resolved, and forgotten once removed.
	_, port, _ := net.SplitHostPort(le.addr)
	write(lw.addr, "dns+localhost:"+port)
	eventually(t, 10*time.Second, func() error {
		if got := endpointNames(fed.f); !slices.Equal(got, want) {
			return fmt.Errorf("after adding dns+localhost:%s: endpoints %q", port, got)
		}
		return nil
	})
	write(lw.addr)
	eventually(t, 10*time.Second, func() error {
		if got := endpointNames(fed.f); !slices.Equal(got, []string{lw.addr}) {
			return fmt.Errorf("after removing dns+localhost:%s: endpoints %q", port, got)
		}
		return nil
	})
}

// TestEndpointDNS: a dns+ endpoint is resolved to the addresses behind the
// name.
func TestEndpointDNS(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	_, port, _ := net.SplitHostPort(le.addr)
	fed := startFederator(t, testOptions("dns+localhost:"+port))
	if got := endpointNames(fed.f); !slices.Contains(got, "127.0.0.1:"+port) {
		t.Fatalf("dns+localhost:%s resolved to endpoints %q, want 127.0.0.1:%s among them", port, got, port)
	}
	r := get(t, fed.url, "/api/v1/query", instant(`up{cluster="east"}`))
	if r.Status != "success" || len(r.result(t).metrics()) != 2 {
		t.Errorf("through dns+localhost: %s %s %s", r.Status, r.Error, r.Data)
	}
}
