package labelsort

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// The keys compare as labels.Compare compares, for strings with the
// bytes the encoding uses (0x00, 0x01, 0xff) anywhere.
func FuzzOrderKey(f *testing.F) {
	f.Add("a", "", "ab", "\x00", "a", "\x00\x01")
	f.Add("__name__", "x", "__name__", "x", "job", "a")
	f.Add("a\x00", "b", "a", "\xff", "a\x01", "")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2, n3, v3 string) {
		sets := []labels.Labels{
			labels.New(labels.Label{Name: n1, Value: v1}),
			labels.New(labels.Label{Name: n1, Value: v1}, labels.Label{Name: n2, Value: v2}),
			labels.New(labels.Label{Name: n2, Value: v2}, labels.Label{Name: n3, Value: v3}),
			labels.New(labels.Label{Name: n1, Value: v3}, labels.Label{Name: n3, Value: v2}),
			labels.EmptyLabels(),
		}
		for _, a := range sets {
			for _, b := range sets {
				want := cmp.Compare(labels.Compare(a, b), 0)
				got := bytes.Compare(appendOrderKey(nil, a), appendOrderKey(nil, b))
				if got != want {
					t.Fatalf("keys of %s and %s compare %d, labels.Compare %d", a, b, got, want)
				}
			}
		}
	})
}

func TestOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"", "a", "b", "ab", "\x00", "a\x00", "\x01", "\xff", "zz"}
	pick := func() string { return alphabet[rng.IntN(len(alphabet))] }
	for trial := range 200 {
		var sets []labels.Labels
		for range rng.IntN(50) {
			var ls []labels.Label
			for range rng.IntN(4) {
				ls = append(ls, labels.Label{Name: pick(), Value: pick()})
			}
			sets = append(sets, labels.New(ls...))
		}
		perm := Order(len(sets), func(i int) labels.Labels { return sets[i] })
		got := make([]labels.Labels, len(perm))
		for i, p := range perm {
			got[i] = sets[p]
		}
		want := slices.Clone(sets)
		slices.SortStableFunc(want, labels.Compare)
		for i := range want {
			if !labels.Equal(got[i], want[i]) {
				t.Fatalf("trial %d: position %d is %s, want %s", trial, i, got[i], want[i])
			}
		}
	}
}

func BenchmarkOrder(b *testing.B) {
	// 8,000 series of one metric, in reverse order, with strings of their
	// own, as series decoded or read from storage have: no two share
	// memory.
	sets := make([]labels.Labels, 8000)
	for i := range sets {
		var ls []labels.Label
		labels.FromStrings(
			"__name__", "http_requests_total", "cluster", "leaf-03", "code", "500",
			"handler", fmt.Sprintf("/api/v1/h%d", i%20), "instance", fmt.Sprintf("10.0.%d.%d:9090", i/250, i%250),
			"job", "synthetic", "method", "GET", "namespace", "default", "pod", fmt.Sprintf("pod-%d", i),
		).Range(func(l labels.Label) {
			ls = append(ls, labels.Label{Name: strings.Clone(l.Name), Value: strings.Clone(l.Value)})
		})
		sets[len(sets)-1-i] = labels.New(ls...)
	}
	b.Run("labels.Compare", func(b *testing.B) {
		for b.Loop() {
			c := slices.Clone(sets)
			slices.SortFunc(c, labels.Compare)
		}
	})
	b.Run("Order", func(b *testing.B) {
		for b.Loop() {
			Order(len(sets), func(i int) labels.Labels { return sets[i] })
		}
	})
}

// OrderWith orders as Order does the sets with the extra labels added.
func TestOrderWith(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	names := []string{"", "a", "b", "cluster", "d", "\x00", "zz"}
	values := []string{"", "x", "y", "\x00", "\xff"}
	for trial := range 300 {
		// The extra labels take some names; the sets use the others.
		var extra []labels.Label
		own := map[string]bool{}
		for _, n := range names {
			switch rng.IntN(4) {
			case 0:
				extra = append(extra, labels.Label{Name: n, Value: values[rng.IntN(len(values))]})
			default:
				own[n] = true
			}
		}
		var ownNames []string
		for _, n := range names {
			if own[n] {
				ownNames = append(ownNames, n)
			}
		}
		var sets, merged []labels.Labels
		for range rng.IntN(40) {
			var ls []labels.Label
			for _, n := range ownNames {
				if rng.IntN(2) == 0 {
					ls = append(ls, labels.Label{Name: n, Value: values[rng.IntN(len(values))]})
				}
			}
			sets = append(sets, labels.New(ls...))
			merged = append(merged, labels.New(append(ls, extra...)...))
		}
		got := OrderWith(len(sets), func(i int) labels.Labels { return sets[i] }, labels.New(extra...))
		want := Order(len(merged), func(i int) labels.Labels { return merged[i] })
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d, extra %v: %v, want %v", trial, extra, got, want)
		}
	}
}
