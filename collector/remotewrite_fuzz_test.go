package collector

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage/remote"
)

// FuzzRemoteWrite feeds arbitrary bodies to the remote-write receiver the
// collector serves: every answer must be a 2xx or a 4xx naming the problem,
// never a 5xx or a panic, and what was accepted before must stay queryable.
func FuzzRemoteWrite(f *testing.F) {
	valid := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "job", Value: "fuzz"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 1000}},
	}}}
	raw, err := valid.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snappy.Encode(nil, raw), true)
	f.Add(raw, true)
	f.Add([]byte("not snappy"), true)
	f.Add(snappy.Encode(nil, []byte{0x0a, 0xff, 0xff, 0xff, 0x0f}), true)
	f.Add(snappy.Encode(nil, raw), false)

	db := openTestDB(f, labels.FromStrings("__name__", "kept", "job", "before"))
	h := remote.NewWriteHandler(promslog.NewNopLogger(), nil, db,
		remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType}, false, false, false)
	f.Fuzz(func(t *testing.T, body []byte, protoHeader bool) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		if protoHeader {
			req.Header.Set("Content-Type", "application/x-protobuf")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for a client's bad body: %s", rec.Code, rec.Body.String())
		}
		if rec.Code >= 400 && rec.Body.Len() == 0 {
			t.Fatalf("status %d without a message", rec.Code)
		}
		q, err := db.Querier(0, 2000)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "kept"))
		if !ss.Next() {
			t.Fatal("a series accepted before the bad request is gone")
		}
	})
}
