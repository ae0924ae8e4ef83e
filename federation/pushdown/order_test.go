package pushdown

import (
	"bytes"
	"cmp"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
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

func TestLabelOrder(t *testing.T) {
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
		perm := LabelOrder(len(sets), func(i int) labels.Labels { return sets[i] })
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

func BenchmarkLabelOrder(b *testing.B) {
	series := testSeries(8000, 0)
	sets := make([]labels.Labels, len(series))
	for i, s := range series {
		// Strings of their own, as series decoded or read from storage
		// have: no two share memory.
		var ls []labels.Label
		labels.NewBuilder(labelpb.ZLabelsToPromLabels(s.Labels)).Set("handler", string(rune('a'+i%26))).Labels().Range(func(l labels.Label) {
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
	b.Run("LabelOrder", func(b *testing.B) {
		for b.Loop() {
			LabelOrder(len(sets), func(i int) labels.Labels { return sets[i] })
		}
	})
}
