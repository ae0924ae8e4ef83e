package pushdown

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{},
		{Query: `sum by (job) (rate(x[5m]))`, StartMs: 1700000000123, EndMs: 1700000600123, StepMs: 37000, LookbackMs: 300000},
		{Query: "x", StartMs: -5, ReplicaLabels: []string{"replica", "prometheus_replica"}, Dedup: true, PartialResponse: true},
		{Query: "rate(x[1m])", Parts: true, PartsGrouping: []string{"job", "le"}, PartsWithout: true},
		{Query: "topk(1, x)", SortSeries: true},
		{Query: "sum(x)", StartMs: 1700000000123, MaxSamples: 50000000},
		{Query: "x", EncodeJSON: true, SetLabels: labels.FromStrings("region", "eu", "a", "\x00é")},
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

	// Labels to set must be labels.
	for _, bad := range []Request{
		{Query: "x", SetLabels: labels.FromStrings("region", "")},
		{Query: "x", SetLabels: labels.New(labels.Label{Name: "a", Value: "1"}, labels.Label{Name: "a", Value: "2"})},
	} {
		buf := make([]byte, bad.Size())
		if _, err := bad.MarshalToSizedBuffer(buf); err != nil {
			t.Fatal(err)
		}
		if err := r.Unmarshal(buf); err == nil || !strings.Contains(err.Error(), "label to set") {
			t.Errorf("labels to set %s: decoded with %v", bad.SetLabels, err)
		}
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

// FuzzRequestUnmarshal: any bytes decode without a panic, and a request
// that decodes encodes back to one that decodes the same.
func FuzzRequestUnmarshal(f *testing.F) {
	for _, r := range []Request{
		{Query: "x", StartMs: 5, EndMs: 10, StepMs: 1, ReplicaLabels: []string{"replica"}, Dedup: true},
		{Query: "sum(x)", Parts: true, PartsGrouping: []string{"job"}, MaxSamples: 10},
		{Query: "x", EncodeJSON: true, SetLabels: labels.FromStrings("region", "eu")},
	} {
		f.Add(r.appendTo(nil))
	}
	f.Add([]byte{0x7a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		if err := r.Unmarshal(b); err != nil {
			return
		}
		var back Request
		if err := back.Unmarshal(r.appendTo(nil)); err != nil {
			t.Fatalf("%+v encodes to a request that does not decode: %v", r, err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip: got %+v, want %+v", back, r)
		}
	})
}
