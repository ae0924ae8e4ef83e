package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"

	"github.com/panorama-obs/panorama/rca"
	"github.com/panorama-obs/panorama/rca/online"
)

func registerRCA(app *kingpin.Application, roles map[string]setupFunc) {
	cmd := app.Command("rca", "Root-cause analysis: rank the causes of an incident, simulate incidents, score the ranking.")

	rank := cmd.Command("rank", "Rank the root-cause candidates of a case file (never reads its truth).")
	var caseFile, rankOutput string
	rank.Flag("case", "Case file (the RCA case format); --case=- reads standard input.").Required().StringVar(&caseFile)
	rank.Flag("output", "Output format.").Default("json").EnumVar(&rankOutput, "json", "text")
	roles[rank.FullCommand()] = func(*promslog.Config) error {
		return runRCARank(caseFile, rankOutput, os.Stdout, os.Stderr)
	}

	sim := cmd.Command("simulate", "Write simulated incidents, with their truth, as case files.")
	var (
		seed  uint64
		count int
		out   string
	)
	sim.Flag("seed", "Seed of the family of cases; the same seed always writes the same cases.").Default("1").Uint64Var(&seed)
	sim.Flag("count", "Number of cases.").Default("100").IntVar(&count)
	sim.Flag("out", "Directory to write the cases to (created if missing).").Required().StringVar(&out)
	var simProgress bool
	sim.Flag("progress", "Report progress on stderr even when it is not a terminal (a line every tenth).").BoolVar(&simProgress)
	roles[sim.FullCommand()] = func(*promslog.Config) error {
		return runRCASimulate(seed, count, out, simProgress, os.Stderr)
	}

	capture := cmd.Command("capture", "Write a replayable case (no truth) from a live system: the topology endpoints' graph, the window's series through PromQL, the firing alerts.")
	var (
		capCfg  online.Config
		capAt   string
		capOut  string
		capName string
	)
	capture.Flag("federator", "Base URL of the federator (or any Prometheus HTTP API), e.g. http://federator:9091.").Required().StringVar(&capCfg.FederatorURL)
	capture.Flag("topology", "URL of a topology block ({\"nodes\",\"edges\"}): a collector's or tracing's /api/v1/topology. Repeatable; the blocks are merged.").Required().StringsVar(&capCfg.TopologyURLs)
	capture.Flag("alertmanager", "Base URL of an Alertmanager API v2 whose alerts join the federator's ALERTS (only for incidents in progress: it holds only active and recently resolved alerts).").StringVar(&capCfg.AlertmanagerURL)
	capture.Flag("at", "When the incident was detected: RFC 3339 (2026-11-23T04:40:15Z) or Unix seconds.").Required().StringVar(&capAt)
	capture.Flag("window", "How much time the case covers: three quarters before --at, a quarter after (never past now).").Default("30m").DurationVar(&capCfg.Window)
	capture.Flag("step", "Sampling interval of the case (query_range step).").Default("15s").DurationVar(&capCfg.Step)
	capture.Flag("lookback", "How far back from each step a sample still counts (raise it to the scrape interval when that is longer than --step); the step when zero.").Default("0s").DurationVar(&capCfg.Lookback)
	capture.Flag("metric", "Another metric name to read as it is, for nodes of any kind (e.g. a database's query_latency_p99_seconds). Repeatable.").StringsVar(&capCfg.ExtraMetrics)
	capture.Flag("timeout", "Bound on the whole capture.").Default("1m").DurationVar(&capCfg.Timeout)
	capture.Flag("name", "Name of the case; \"incident at <time>\" when empty.").StringVar(&capName)
	capture.Flag("out", "File to write the case to; - for standard output.").Required().StringVar(&capOut)
	roles[capture.FullCommand()] = func(*promslog.Config) error {
		return runRCACapture(capCfg, capAt, capName, capOut, os.Stdout, os.Stderr)
	}

	eval := cmd.Command("eval", "Score the ranking, and the NSigma and BARO baselines, on case files with truth.")
	var (
		casesDir, evalOutput string
	)
	eval.Flag("cases", "Directory of case files (*.json).").Required().StringVar(&casesDir)
	eval.Flag("output", "Output format.").Default("text").EnumVar(&evalOutput, "json", "text")
	var evalProgress bool
	eval.Flag("progress", "Report progress on stderr even when it is not a terminal (a line every tenth); on a terminal a bar is always drawn.").BoolVar(&evalProgress)
	roles[eval.FullCommand()] = func(*promslog.Config) error {
		return runRCAEval(casesDir, evalOutput, evalProgress, os.Stdout, os.Stderr)
	}
}

func runRCARank(file, output string, stdout, stderr io.Writer) error {
	r, closeFn, err := openCase(file)
	if err != nil {
		return err
	}
	defer closeFn()
	name := file
	if file == "-" {
		name = "standard input"
	}
	c, err := rca.ParseCase(r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	ranking := rca.Rank(c, rca.Options{})
	for _, w := range ranking.Warnings {
		fmt.Fprintf(stderr, "warning: %s: %s\n", name, w)
	}
	if output == "text" {
		return ranking.WriteText(stdout)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(ranking)
}

func runRCACapture(cfg online.Config, at, name, out string, stdout, stderr io.Writer) error {
	detected, err := parseTime(at)
	if err != nil {
		return fmt.Errorf("--at: %w", err)
	}
	c, err := online.New(cfg)
	if err != nil {
		return err
	}
	cs, err := c.Capture(context.Background(), online.Incident{Name: name, DetectedAt: detected})
	if err != nil {
		return err
	}
	for _, w := range cs.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if out == "-" {
		return rca.WriteCase(stdout, cs, nil)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := rca.WriteCase(f, cs, nil); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	series := 0
	if cs.Metrics != nil {
		series = len(cs.Metrics.Series)
	}
	fmt.Fprintf(stderr, "wrote %s: %d topology nodes, %d series, %d alerts\n", out, len(cs.Topology.Nodes), series, len(cs.Alerts))
	return nil
}

// parseTime reads a time as promtool does: RFC 3339 or Unix seconds (with
// a fraction).
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if sec, err := strconv.ParseFloat(s, 64); err == nil {
		if sec <= 0 || sec > 1e11 {
			return time.Time{}, fmt.Errorf("%q: Unix seconds out of range", s)
		}
		return time.UnixMilli(int64(sec * 1000)).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: not RFC 3339 (2026-11-23T04:40:15Z) nor Unix seconds", s)
	}
	return t, nil
}

func openCase(file string) (io.Reader, func(), error) {
	switch file {
	case "":
		return nil, nil, fmt.Errorf("--case needs a file name (--case=- reads standard input)")
	case "-":
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func runRCASimulate(seed uint64, count int, dir string, showProgress bool, stderr io.Writer) error {
	if count < 1 {
		return fmt.Errorf("--count must be at least 1")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bar := newProgress(stderr, "simulate", count, showProgress)
	for i := range count {
		c, t := rca.Simulate(seed, i)
		path := filepath.Join(dir, fmt.Sprintf("sim-%d-%04d.json", seed, i))
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := rca.WriteCase(f, c, t); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		bar.set(i + 1)
	}
	bar.done()
	fmt.Fprintf(stderr, "wrote %d cases to %s\n", count, dir)
	return nil
}

func runRCAEval(dir, output string, showProgress bool, stdout, stderr io.Writer) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no *.json case files in %s", dir)
	}
	bar := newProgress(stderr, "eval", len(files), showProgress)
	report, err := rca.Evaluate(files, rca.EvalOptions{Progress: bar.set})
	bar.done()
	if err != nil {
		return err
	}
	for _, w := range report.Skipped {
		fmt.Fprintf(stderr, "skipped: %s\n", w)
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return report.WriteText(stdout)
}

// progress draws a bar on stderr for runs long enough to need one: redrawn
// in place on a terminal; elsewhere (a log, a CI job) nothing, unless asked
// for, and then a line every tenth.
type progress struct {
	w        io.Writer
	label    string
	total    int
	tty      bool
	enabled  bool
	start    time.Time
	lastDraw time.Time
	lastTen  int
	drawn    bool
}

func newProgress(w io.Writer, label string, total int, force bool) *progress {
	p := &progress{w: w, label: label, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	p.enabled = p.tty || force
	return p
}

func (p *progress) set(done int) {
	if !p.enabled {
		return
	}
	if time.Since(p.start) < time.Second && done < p.total {
		return
	}
	if p.tty {
		if time.Since(p.lastDraw) < 100*time.Millisecond && done < p.total {
			return
		}
		p.lastDraw = time.Now()
		const width = 30
		fill := width * done / max(p.total, 1)
		bar := make([]byte, width)
		for i := range bar {
			switch {
			case i < fill:
				bar[i] = '='
			case i == fill:
				bar[i] = '>'
			default:
				bar[i] = ' '
			}
		}
		fmt.Fprintf(p.w, "\r%s [%s] %d/%d %s", p.label, bar, done, p.total, time.Since(p.start).Round(time.Second))
		p.drawn = true
		return
	}
	if ten := 10 * done / max(p.total, 1); ten > p.lastTen {
		p.lastTen = ten
		fmt.Fprintf(p.w, "%s: %d/%d (%d%%) %s\n", p.label, done, p.total, 100*done/max(p.total, 1), time.Since(p.start).Round(time.Second))
	}
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
