package rca

import (
	"math"
	"slices"
	"sort"
)

// NSigma is the n-sigma baseline of Pham et al. (RCAEval, ASE'24 and
// FSE'24): every series is standardised with the mean and standard deviation
// of its samples before detection, scored by its largest standardised value
// after, and nodes are ranked by their best series.
func NSigma(c *Case) []string {
	return rankSeries(c, func(ref []float64) (float64, float64) {
		var mean, sq float64
		for _, v := range ref {
			mean += v
		}
		mean /= float64(len(ref))
		for _, v := range ref {
			sq += (v - mean) * (v - mean)
		}
		return mean, math.Sqrt(sq / float64(len(ref)))
	})
}

// BARO is the robust scorer of BARO (Pham et al., FSE'24), as RCAEval runs
// it: every series is scaled with the median and interquartile range of its
// samples before detection, scored by its largest scaled value after, and
// nodes are ranked by their best series.
func BARO(c *Case) []string {
	return rankSeries(c, func(ref []float64) (float64, float64) {
		s := slices.Clone(ref)
		slices.Sort(s)
		return quantileSorted(s, 0.5), quantileSorted(s, 0.75) - quantileSorted(s, 0.25)
	})
}

// rankSeries ranks nodes by the largest scaled value of any of their series
// after detection. As in RCAEval, series constant before or after detection
// are dropped and a zero scale counts as one; missing samples are skipped.
func rankSeries(c *Case, fit func(ref []float64) (center, scale float64)) []string {
	m := c.Metrics
	if m == nil {
		return nil
	}
	best := map[string]float64{}
	for _, s := range m.Series {
		var ref, test []float64
		for i, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			if m.Start+float64(i)*m.Step < c.DetectedAt {
				ref = append(ref, v)
			} else {
				test = append(test, v)
			}
		}
		if len(ref) == 0 || len(test) == 0 || constant(ref) || constant(test) {
			continue
		}
		center, scale := fit(ref)
		if scale == 0 || math.IsNaN(scale) {
			scale = 1
		}
		score := math.Inf(-1)
		for _, v := range test {
			score = max(score, (v-center)/scale)
		}
		if cur, ok := best[s.Node]; !ok || score > cur {
			best[s.Node] = score
		}
	}
	nodes := make([]string, 0, len(best))
	for n := range best {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool {
		if best[nodes[i]] != best[nodes[j]] {
			return best[nodes[i]] > best[nodes[j]]
		}
		return nodes[i] < nodes[j]
	})
	return nodes
}

func constant(x []float64) bool {
	for _, v := range x[1:] {
		if v != x[0] {
			return false
		}
	}
	return true
}
