package server

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/prometheus/prometheus/util/httputil"
)

// TestGzipFast: a client that accepts gzip gets the answer compressed
// once (not again by the Prometheus handler inside), one that accepts
// deflate only gets the inner handler's deflate, and one that accepts
// neither gets the answer as it is.
func TestGzipFast(t *testing.T) {
	body := []byte(`{"status":"success","data":{"resultType":"vector","result":[` + strings.Repeat(`{"metric":{"__name__":"x","job":"a"},"value":[1,"1"]},`, 2000) + `{}]}}`)
	inner := httputil.CompressionHandler{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	srv := httptest.NewServer(GzipFast(inner))
	defer srv.Close()
	for _, tc := range []struct {
		accept, encoding string
		decode           func(io.Reader) (io.Reader, error)
	}{
		{"gzip", "gzip", func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
		{"gzip, deflate, br", "gzip", func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
		{"deflate", "deflate", func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) }},
		{"", "", func(r io.Reader) (io.Reader, error) { return r, nil }},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if tc.accept != "" {
			req.Header.Set("Accept-Encoding", tc.accept)
		}
		// Not the client's transparent gzip: the answer as sent.
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("Content-Encoding"); got != tc.encoding {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", tc.accept, got, tc.encoding)
			continue
		}
		r, err := tc.decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("Accept-Encoding %q: %v", tc.accept, err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("Accept-Encoding %q: %v", tc.accept, err)
		}
		if tc.encoding == "gzip" {
			// At the fastest level, not the inner handler's default.
			var fast bytes.Buffer
			w, _ := kgzip.NewWriterLevel(&fast, kgzip.BestSpeed)
			w.Write(body)
			w.Close()
			if len(raw) != fast.Len() {
				t.Errorf("Accept-Encoding %q: %d bytes of gzip, want %d (the fastest level)", tc.accept, len(raw), fast.Len())
			}
		}
		if !bytes.Equal(got, body) {
			t.Errorf("Accept-Encoding %q: %d bytes decoded (%.40q…), want the %d of the answer", tc.accept, len(got), got, len(body))
		}
	}
}
