package rca

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"text/tabwriter"
	"time"
)

// Method is a ranking method scored by Evaluate: a function from a case to
// node IDs, best first.
type Method struct {
	Name string
	Rank func(c *Case) []string
}

// Methods returns Panorama's ranking and the two published baselines it is
// compared with.
func Methods() []Method {
	return []Method{
		{Name: "panorama", Rank: func(c *Case) []string { return Rank(c, Options{}).Nodes() }},
		{Name: "baro", Rank: BARO},
		{Name: "nsigma", Rank: NSigma},
	}
}

// EvalOptions tunes Evaluate.
type EvalOptions struct {
	// Methods to score; Methods() when empty.
	Methods []Method
	// Workers is how many cases are ranked at once; GOMAXPROCS when zero.
	Workers int
	// Progress, when set, is called with the number of cases done so far.
	Progress func(done int)
}

// Report holds the scores of every method, overall and per group.
type Report struct {
	Cases   int            `json:"cases"`
	Skipped []string       `json:"skipped,omitempty"`
	Methods []MethodReport `json:"methods"`
}

// MethodReport is one method's scores.
type MethodReport struct {
	Method      string        `json:"method"`
	Overall     Scores        `json:"overall"`
	ByFault     []GroupScores `json:"byFault"`
	BySituation []GroupScores `json:"bySituation"`
	// MeanRankTime and MaxRankTime are per case, parsing excluded.
	MeanRankTime time.Duration `json:"meanRankTimeNs"`
	MaxRankTime  time.Duration `json:"maxRankTimeNs"`
}

// GroupScores are the scores of the cases of one fault type or situation.
type GroupScores struct {
	Group string `json:"group"`
	Scores
}

// Scores are the accuracies of the formats README: AC@k is the share of
// cases whose first k ranked nodes include an accepted answer, Avg@5 the mean
// of AC@1..AC@5, strict AC@1 the share whose first node is a most precise
// answer.
type Scores struct {
	Cases     int     `json:"cases"`
	AC1       float64 `json:"ac1"`
	AC3       float64 `json:"ac3"`
	AC5       float64 `json:"ac5"`
	Avg5      float64 `json:"avg5"`
	StrictAC1 float64 `json:"strictAc1"`
}

// Hit is where the first accepted answer of one case was ranked, and whether
// the first node was a most precise answer.
type Hit struct {
	// Pos is the 1-based rank of the first accepted answer, 0 when absent
	// from the ranking.
	Pos    int
	Strict bool
}

// Score compares a ranking with the truth.
func Score(ranking []string, t *Truth) Hit {
	var h Hit
	for i, id := range ranking {
		if slices.Contains(t.Root, id) {
			h.Pos = i + 1
			break
		}
	}
	h.Strict = len(ranking) > 0 && slices.Contains(t.StrictAnswers(), ranking[0])
	return h
}

type acc struct {
	n      int
	within [6]int // within[k]: cases with the answer in the first k
	strict int
}

func (a *acc) add(h Hit) {
	a.n++
	for k := 1; k <= 5; k++ {
		if h.Pos > 0 && h.Pos <= k {
			a.within[k]++
		}
	}
	if h.Strict {
		a.strict++
	}
}

func (a *acc) scores() Scores {
	if a.n == 0 {
		return Scores{}
	}
	n := float64(a.n)
	s := Scores{Cases: a.n, AC1: float64(a.within[1]) / n, AC3: float64(a.within[3]) / n, AC5: float64(a.within[5]) / n, StrictAC1: float64(a.strict) / n}
	for k := 1; k <= 5; k++ {
		s.Avg5 += float64(a.within[k]) / n / 5
	}
	return s
}

// Evaluate ranks every case file with every method and scores the rankings
// against the files' truth. Files without truth are skipped and listed.
func Evaluate(files []string, opts EvalOptions) (*Report, error) {
	methods := opts.Methods
	if len(methods) == 0 {
		methods = Methods()
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type result struct {
		truth   *Truth
		hits    []Hit
		elapsed []time.Duration
		skip    string
		err     error
	}
	results := make([]result, len(files))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
		next = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = func() result {
					f, err := os.Open(files[i])
					if err != nil {
						return result{err: err}
					}
					c, truth, err := ParseEvalCase(f)
					f.Close()
					if err != nil {
						return result{err: fmt.Errorf("%s: %w", files[i], err)}
					}
					if truth == nil || len(truth.Root) == 0 {
						return result{skip: files[i] + ": no truth"}
					}
					r := result{truth: truth}
					for _, m := range methods {
						start := time.Now()
						ranking := m.Rank(c)
						r.elapsed = append(r.elapsed, time.Since(start))
						r.hits = append(r.hits, Score(ranking, truth))
					}
					return r
				}()
				mu.Lock()
				done++
				if opts.Progress != nil {
					opts.Progress(done)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()

	rep := &Report{}
	overall := make([]acc, len(methods))
	byFault := make([]map[string]*acc, len(methods))
	bySit := make([]map[string]*acc, len(methods))
	total := make([]time.Duration, len(methods))
	worst := make([]time.Duration, len(methods))
	for m := range methods {
		byFault[m], bySit[m] = map[string]*acc{}, map[string]*acc{}
	}
	group := func(g map[string]*acc, key string) *acc {
		if g[key] == nil {
			g[key] = &acc{}
		}
		return g[key]
	}
	for _, r := range results {
		if r.err != nil {
			return nil, r.err
		}
		if r.skip != "" {
			rep.Skipped = append(rep.Skipped, r.skip)
			continue
		}
		rep.Cases++
		sits := r.truth.Situations
		if len(sits) == 0 {
			sits = []string{"unlabelled"}
		}
		for m := range methods {
			h := r.hits[m]
			overall[m].add(h)
			for _, f := range r.truth.FaultTypes() {
				group(byFault[m], f).add(h)
			}
			for _, s := range sits {
				group(bySit[m], s).add(h)
			}
			total[m] += r.elapsed[m]
			worst[m] = max(worst[m], r.elapsed[m])
		}
	}
	for m, meth := range methods {
		mr := MethodReport{Method: meth.Name, Overall: overall[m].scores(), MaxRankTime: worst[m]}
		if rep.Cases > 0 {
			mr.MeanRankTime = total[m] / time.Duration(rep.Cases)
		}
		for _, k := range sortedGroups(byFault[m]) {
			mr.ByFault = append(mr.ByFault, GroupScores{Group: k, Scores: byFault[m][k].scores()})
		}
		for _, k := range sortedGroups(bySit[m]) {
			mr.BySituation = append(mr.BySituation, GroupScores{Group: k, Scores: bySit[m][k].scores()})
		}
		rep.Methods = append(rep.Methods, mr)
	}
	return rep, nil
}

func sortedGroups(m map[string]*acc) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WriteText writes the report as aligned tables: overall, per fault type
// and per situation, each with a row per method.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "%d cases", r.Cases)
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, " (%d skipped)", len(r.Skipped))
	}
	fmt.Fprintln(w)
	row := func(group, method string, s Scores) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", group, method, s.Cases, s.AC1, s.AC3, s.AC5, s.Avg5, s.StrictAC1)
	}
	header := func(title string) {
		fmt.Fprintf(tw, "%s\tmethod\tcases\tAC@1\tAC@3\tAC@5\tAvg@5\tstrict AC@1\t\n", title)
	}
	header("")
	for _, m := range r.Methods {
		row("overall", m.Method, m.Overall)
	}
	section := func(title string, groups func(MethodReport) []GroupScores) {
		fmt.Fprintf(tw, "\t\t\t\t\t\t\t\t\n")
		header(title)
		if len(r.Methods) == 0 {
			return
		}
		for i, g := range groups(r.Methods[0]) {
			for _, m := range r.Methods {
				gs := groups(m)
				if i < len(gs) {
					row(g.Group, m.Method, gs[i].Scores)
				}
			}
		}
	}
	section("fault", func(m MethodReport) []GroupScores { return m.ByFault })
	section("situation", func(m MethodReport) []GroupScores { return m.BySituation })
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, m := range r.Methods {
		fmt.Fprintf(w, "%s: ranking time mean %s, max %s\n", m.Method, m.MeanRankTime.Round(10*time.Microsecond), m.MaxRankTime.Round(10*time.Microsecond))
	}
	return nil
}
