package pushdown

import (
	"reflect"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{},
		{Query: `sum by (job) (rate(x[5m]))`, StartMs: 1700000000123, EndMs: 1700000600123, StepMs: 37000, LookbackMs: 300000},
		{Query: "x", StartMs: -5, ReplicaLabels: []string{"replica", "prometheus_replica"}, Dedup: true, PartialResponse: true},
		{Query: "rate(x[1m])", Parts: true, PartsGrouping: []string{"job", "le"}, PartsWithout: true},
		{Query: "topk(1, x)", SortSeries: true},
		{Query: "sum(x)", StartMs: 1700000000123, MaxSamples: 50000000},
	} {
		buf := make([]byte, r.Size())
		n, err := r.MarshalToSizedBuffer(buf)
		if err != nil || n != len(buf) {
			t.Fatalf("marshal %+v: %d bytes of %d, %v", r, n, len(buf), err)
		}
		var back Request
		if err := back.Unmarshal(buf); err != nil {
			t.Fatalf("unmarshal %+v: %v", r, err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Errorf("round trip: got %+v, want %+v", back, r)
		}
	}
	var r Request
	if err := r.Unmarshal([]byte{0x0a, 0x05, 'x'}); err == nil {
		t.Error("a truncated message decoded without error")
	}

	// A request of a federator that does not know MaxSamples: no limit
	// but the leaf's own.
	old := Request{Query: "x", StartMs: 1}
	buf := make([]byte, old.Size())
	if _, err := old.MarshalToSizedBuffer(buf); err != nil {
		t.Fatal(err)
	}
	if err := r.Unmarshal(buf); err != nil || r.MaxSamples != 0 {
		t.Errorf("a request without max samples decodes as %+v, %v", r, err)
	}
}
