// Package rca ranks the candidate root causes of an incident (pods, services,
// nodes, databases…) over the topology graph, from the metric series and the
// alerts around the moment the incident was detected, and scores the ranking
// on replayed faults. A case is read from the RCA case format of the formats
// README; Rank is one function from a case to a ranking.
package rca

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/panorama-obs/panorama/topology"
)

// CaseVersion is the version of the case format this package reads and writes.
const CaseVersion = 1

// Case is one incident to rank: the topology around it, the metric series of
// its nodes over a window, the alerts that fired, and when it was detected.
// It never holds the evaluation truth: that is a separate Truth, so that
// nothing given a Case can read it.
type Case struct {
	Version int
	Name    string
	// Topology is the graph; edges naming nodes absent from its node list
	// have had those nodes added (see topology.Graph.AddImplicitNodes).
	Topology *topology.Graph
	// Metrics is nil when the case has none.
	Metrics *Metrics
	Alerts  []Alert
	// DetectedAt is when the incident was noticed (its first alert), in
	// unix seconds.
	DetectedAt float64
	// Warnings says what was odd but tolerated in the input: missing
	// metrics, series of unknown nodes, a guessed detection time…
	Warnings []string
}

// Metrics are the series of a case, all sampled on one grid.
type Metrics struct {
	// Start is the time of the first sample, in unix seconds.
	Start float64
	// Step is the interval between samples, in seconds.
	Step   float64
	Series []Series
}

// Series is one metric of one topology node. Values[i] was sampled at
// Start + i*Step; NaN marks a missing sample (null in JSON).
type Series struct {
	Node   string
	Name   string
	Values []float64
}

// Alert is an alert in the shape of Alertmanager's API v2. EndsAt is zero
// when absent.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Truth is what really happened in an evaluation case. Only evaluation reads
// it; Rank cannot, as it is never part of a Case.
type Truth struct {
	// Root lists every accepted answer.
	Root []string `json:"root"`
	// Fault names the injected fault (the first one when there are several).
	Fault string `json:"fault"`
	// Strict holds the most precise answer of each fault, in the order of
	// Faults.
	Strict []string `json:"strict,omitempty"`
	// Faults names each fault when the case holds several.
	Faults []string `json:"faults,omitempty"`
	// Situations is Panorama's extension to the format: the situations the
	// simulator set up (noisy_neighbour, shared_dependency…), so that eval
	// can score each. Readers that do not know it ignore it.
	Situations []string `json:"situations,omitempty"`
}

// FaultTypes returns the distinct fault types of the case: Faults, or Fault
// when Faults is empty.
func (t *Truth) FaultTypes() []string {
	var out []string
	for _, f := range append([]string{t.Fault}, t.Faults...) {
		if f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// StrictAnswers returns Strict, or the first root when Strict is absent.
func (t *Truth) StrictAnswers() []string {
	if len(t.Strict) > 0 {
		return t.Strict
	}
	if len(t.Root) > 0 {
		return t.Root[:1]
	}
	return nil
}

// ParseCase reads a case for ranking. A truth block is skipped unread. See
// ParseEvalCase for the errors it returns.
func ParseCase(r io.Reader) (*Case, error) {
	c, _, err := parse(r, false)
	return c, err
}

// ParseEvalCase reads a case and its truth, nil when the file has none.
// Unknown fields are ignored; a malformed file is refused with an error that
// names the field and the line, e.g.
//
//	line 57: metrics.series[12].values[3]: not a number
func ParseEvalCase(r io.Reader) (*Case, *Truth, error) {
	return parse(r, true)
}

func parse(r io.Reader, withTruth bool) (*Case, *Truth, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("read case: %w", err)
	}
	p := &parser{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	c := &Case{}
	var (
		truth                *Truth
		haveVersion, haveDet bool
		topOff               int64
	)
	err = p.object("case", func(key string, off int64) error {
		switch strings.ToLower(key) {
		case "version":
			v, err := p.number("version")
			if err != nil {
				return err
			}
			if v != CaseVersion {
				return p.errorf(off, "version", "unsupported version %v; this Panorama reads version %d", v, CaseVersion)
			}
			c.Version, haveVersion = CaseVersion, true
		case "name":
			c.Name, err = p.str("name")
			return err
		case "topology":
			topOff = off
			raw, err := p.raw("topology")
			if err != nil {
				return err
			}
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				return nil
			}
			c.Topology, err = topology.DecodeWith(bytes.NewReader(raw), topology.DecodeOptions{Line: p.line(off), ImplicitNodes: true})
			return err
		case "metrics":
			c.Metrics, err = p.metrics()
			return err
		case "alerts":
			c.Alerts, err = p.alerts()
			return err
		case "detectedat":
			c.DetectedAt, haveDet, err = p.timestamp("detectedAt")
			return err
		case "truth":
			if !withTruth {
				return p.skip("truth")
			}
			var t Truth
			if err := p.dec.Decode(&t); err != nil {
				return p.jsonError("truth", err, off)
			}
			truth = &t
		default:
			return p.skip(key)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if c.Topology == nil {
		if topOff > 0 {
			return nil, nil, p.errorf(topOff, "topology", "null; a case needs its topology block")
		}
		return nil, nil, errors.New("topology: missing; a case needs its topology block (see the formats README)")
	}
	if !haveVersion {
		c.Version = CaseVersion
		c.warnf("version missing; read as version %d", CaseVersion)
	}
	if err := c.check(p, haveDet); err != nil {
		return nil, nil, err
	}
	return c, truth, nil
}

// check validates what the parser cannot see element by element and fills
// in what can be guessed, with a warning.
func (c *Case) check(p *parser, haveDet bool) error {
	known := make(map[string]bool, len(c.Topology.Nodes))
	for _, n := range c.Topology.Nodes {
		known[n.ID] = true
	}
	if m := c.Metrics; m != nil {
		if len(m.Series) > 0 && !(m.Step > 0) {
			return p.errorf(p.metricsOff, "metrics.step", "must be a positive number of seconds, got %v", m.Step)
		}
		seen := make(map[[2]string]bool, len(m.Series))
		var unknown, dups []string
		kept := m.Series[:0]
		for _, s := range m.Series {
			key := [2]string{s.Node, s.Name}
			if seen[key] {
				dups = append(dups, s.Node+" "+s.Name)
				continue
			}
			seen[key] = true
			if !known[s.Node] {
				known[s.Node] = true
				c.Topology.Nodes = append(c.Topology.Nodes, topology.Node{ID: s.Node, Kind: topology.ImplicitKind(s.Node)})
				unknown = append(unknown, s.Node)
			}
			kept = append(kept, s)
		}
		m.Series = kept
		if len(unknown) > 0 {
			c.warnf("%d series nodes are not in the topology and were added without edges: %s", len(unknown), sample(unknown))
		}
		if len(dups) > 0 {
			c.warnf("%d duplicate series ignored (the first of each is kept): %s", len(dups), sample(dups))
		}
	}
	if c.Metrics == nil || len(c.Metrics.Series) == 0 {
		c.Metrics = nil
		c.warnf("no metrics: ranking on topology and alerts only")
	}
	if !haveDet {
		var first time.Time
		for _, a := range c.Alerts {
			if !a.StartsAt.IsZero() && (first.IsZero() || a.StartsAt.Before(first)) {
				first = a.StartsAt
			}
		}
		switch {
		case !first.IsZero():
			c.DetectedAt = float64(first.UnixNano()) / 1e9
			c.warnf("detectedAt missing; using the first alert's start, %s", first.UTC().Format(time.RFC3339))
		case c.Metrics != nil:
			n := c.Metrics.Len()
			c.DetectedAt = c.Metrics.Start + c.Metrics.Step*float64(n*2/3)
			c.warnf("detectedAt missing and no alert has a start; assuming two thirds into the metrics window")
		default:
			c.warnf("detectedAt missing")
		}
	}
	if m := c.Metrics; m != nil {
		end := m.Start + m.Step*float64(max(m.Len()-1, 0))
		if c.DetectedAt < m.Start || c.DetectedAt > end {
			c.warnf("detectedAt %s is outside the metrics window %s–%s",
				formatUnix(c.DetectedAt), formatUnix(m.Start), formatUnix(end))
		}
	}
	return nil
}

// Len returns the number of samples of the longest series.
func (m *Metrics) Len() int {
	n := 0
	for _, s := range m.Series {
		n = max(n, len(s.Values))
	}
	return n
}

func (c *Case) warnf(format string, args ...any) {
	c.Warnings = append(c.Warnings, fmt.Sprintf(format, args...))
}

// sample lists the first few items of a long list.
func sample(items []string) string {
	const show = 3
	if len(items) <= show {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:show], ", ") + fmt.Sprintf(" and %d more", len(items)-show)
}

// parser walks a case token by token, so that every error can name the
// field, its index and its line.
type parser struct {
	data       []byte
	dec        *json.Decoder
	metricsOff int64
}

func (p *parser) line(off int64) int {
	off = max(0, min(off, int64(len(p.data))))
	return bytes.Count(p.data[:off], []byte("\n")) + 1
}

func (p *parser) errorf(off int64, field, format string, args ...any) error {
	return fmt.Errorf("line %d: %s: %s", p.line(off), field, fmt.Sprintf(format, args...))
}

// next returns the offset at which the decoder's next value starts.
func (p *parser) next() int64 {
	off := p.dec.InputOffset()
	for off < int64(len(p.data)) && strings.IndexByte(" \t\r\n,:", p.data[off]) >= 0 {
		off++
	}
	return off
}

// jsonError turns an encoding/json error met at offset base into one naming
// the field and line.
func (p *parser) jsonError(field string, err error, base int64) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("line %d: %s: %s", p.line(syntax.Offset), field, syntax)
	case errors.As(err, &typ):
		if typ.Field != "" {
			field += "." + typ.Field
		}
		return fmt.Errorf("line %d: %s: want %s, got JSON %s", p.line(base+typ.Offset), field, typeName(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if len(bytes.TrimSpace(p.data)) == 0 {
			return errors.New("case: empty input")
		}
		return fmt.Errorf("line %d: %s: unexpected end of input", p.line(int64(len(p.data))), field)
	}
	return fmt.Errorf("line %d: %s: %w", p.line(base), field, err)
}

func typeName(kind string) string {
	switch kind {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "float64", "int", "int64":
		return "a number"
	}
	return "a " + kind
}

func describe(tok json.Token) string {
	switch tok := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		if tok == '[' {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

func (p *parser) token(field string) (json.Token, int64, error) {
	off := p.next()
	tok, err := p.dec.Token()
	if err != nil {
		return nil, off, p.jsonError(field, err, off)
	}
	return tok, off, nil
}

// object walks a JSON object, calling fn for each key with the offset of its
// value; fn must consume the value. A null is an empty object.
func (p *parser) object(field string, fn func(key string, off int64) error) error {
	tok, off, err := p.token(field)
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('{') {
		return p.errorf(off, field, "want an object, got %s", describe(tok))
	}
	for p.dec.More() {
		tok, _, err := p.token(field)
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if err := fn(key, p.next()); err != nil {
			return err
		}
	}
	if _, _, err := p.token(field); err != nil {
		return err
	}
	if field == "case" {
		if tok, err := p.dec.Token(); err != io.EOF {
			if err != nil {
				return p.jsonError(field, err, p.dec.InputOffset())
			}
			return p.errorf(p.dec.InputOffset(), "case", "unexpected data after the object: %s", describe(tok))
		}
	}
	return nil
}

// array walks a JSON array, calling fn for each element with its index and
// offset; fn must consume the element. A null is an empty array.
func (p *parser) array(field string, fn func(i int, off int64) error) error {
	tok, off, err := p.token(field)
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	if tok != json.Delim('[') {
		return p.errorf(off, field, "want an array, got %s", describe(tok))
	}
	for i := 0; p.dec.More(); i++ {
		if err := fn(i, p.next()); err != nil {
			return err
		}
	}
	_, _, err = p.token(field)
	return err
}

func (p *parser) skip(field string) error {
	var skip json.RawMessage
	off := p.next()
	if err := p.dec.Decode(&skip); err != nil {
		return p.jsonError(field, err, off)
	}
	return nil
}

func (p *parser) raw(field string) (json.RawMessage, error) {
	var raw json.RawMessage
	off := p.next()
	if err := p.dec.Decode(&raw); err != nil {
		return nil, p.jsonError(field, err, off)
	}
	return raw, nil
}

func (p *parser) str(field string) (string, error) {
	tok, off, err := p.token(field)
	if err != nil {
		return "", err
	}
	switch tok := tok.(type) {
	case string:
		return tok, nil
	case nil:
		return "", nil
	default:
		return "", p.errorf(off, field, "want a string, got %s", describe(tok))
	}
}

// number reads a JSON number. Objects and arrays are refused before being
// entered, so the walk stays in step.
func (p *parser) number(field string) (float64, error) {
	tok, off, err := p.token(field)
	if err != nil {
		return 0, err
	}
	v, ok := tok.(float64)
	if !ok {
		return 0, p.errorf(off, field, "want a number, got %s", describe(tok))
	}
	return v, nil
}

// timestamp reads unix seconds, or an RFC 3339 string for convenience.
func (p *parser) timestamp(field string) (float64, bool, error) {
	tok, off, err := p.token(field)
	if err != nil {
		return 0, false, err
	}
	switch tok := tok.(type) {
	case float64:
		return tok, true, nil
	case nil:
		return 0, false, nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, tok)
		if err != nil {
			return 0, false, p.errorf(off, field, "want unix seconds or an RFC 3339 time, got %q", tok)
		}
		return float64(t.UnixNano()) / 1e9, true, nil
	default:
		return 0, false, p.errorf(off, field, "want unix seconds, got %s", describe(tok))
	}
}

func (p *parser) metrics() (*Metrics, error) {
	m := &Metrics{}
	p.metricsOff = p.next()
	present := false
	err := p.object("metrics", func(key string, off int64) error {
		present = true
		var err error
		switch strings.ToLower(key) {
		case "start":
			m.Start, _, err = p.timestamp("metrics.start")
			if err == nil && (math.IsInf(m.Start, 0) || math.IsNaN(m.Start)) {
				err = p.errorf(off, "metrics.start", "not a time")
			}
		case "step":
			m.Step, err = p.number("metrics.step")
			if err == nil && !(m.Step > 0) {
				err = p.errorf(off, "metrics.step", "must be a positive number of seconds, got %v", m.Step)
			}
		case "series":
			err = p.array("metrics.series", func(i int, off int64) error {
				s, err := p.series(i, off)
				if err == nil {
					m.Series = append(m.Series, s)
				}
				return err
			})
		default:
			err = p.skip("metrics." + key)
		}
		return err
	})
	if err != nil || !present {
		return nil, err
	}
	return m, nil
}

func (p *parser) series(i int, off int64) (Series, error) {
	var s Series
	field := fmt.Sprintf("metrics.series[%d]", i)
	err := p.object(field, func(key string, off int64) error {
		var err error
		switch strings.ToLower(key) {
		case "node":
			s.Node, err = p.str(field + ".node")
		case "name":
			s.Name, err = p.str(field + ".name")
		case "values":
			var raw json.RawMessage
			if raw, err = p.raw(field + ".values"); err == nil {
				s.Values, err = p.values(field+".values", raw, off)
			}
		default:
			err = p.skip(field + "." + key)
		}
		return err
	})
	if err != nil {
		return s, err
	}
	switch {
	case s.Node == "":
		return s, p.errorf(off, field+".node", "missing or empty")
	case s.Name == "":
		return s, p.errorf(off, field+".name", "missing or empty")
	}
	return s, nil
}

// values parses a JSON array of numbers and nulls that the decoder has
// already checked for syntax, without a token per sample. Numeric strings
// (as Prometheus' API renders samples) are accepted.
func (p *parser) values(field string, raw []byte, base int64) ([]float64, error) {
	i := skipSpace(raw, 0)
	if bytes.HasPrefix(raw[i:], []byte("null")) {
		return nil, nil
	}
	if i >= len(raw) || raw[i] != '[' {
		return nil, p.errorf(base, field, "want an array of numbers")
	}
	out := make([]float64, 0, bytes.Count(raw, []byte(","))+1)
	i = skipSpace(raw, i+1)
	for k := 0; i < len(raw) && raw[i] != ']'; k++ {
		start := i
		notNumber := func() error {
			return p.errorf(base+int64(start), fmt.Sprintf("%s[%d]", field, k), "not a number")
		}
		switch c := raw[i]; {
		case c == 'n':
			out = append(out, math.NaN())
			i += 4
		case c == '-' || (c >= '0' && c <= '9'):
			for i < len(raw) && strings.IndexByte("0123456789+-.eE", raw[i]) >= 0 {
				i++
			}
			v, err := strconv.ParseFloat(string(raw[start:i]), 64)
			if err != nil || math.IsInf(v, 0) {
				return nil, p.errorf(base+int64(start), fmt.Sprintf("%s[%d]", field, k), "number out of range")
			}
			out = append(out, v)
		case c == '"':
			i++
			for i < len(raw) && raw[i] != '"' {
				if raw[i] == '\\' {
					i++
				}
				i++
			}
			i++
			var str string
			if err := json.Unmarshal(raw[start:min(i, len(raw))], &str); err != nil {
				return nil, notNumber()
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(str), 64)
			if err != nil {
				return nil, notNumber()
			}
			if math.IsInf(v, 0) {
				v = math.NaN()
			}
			out = append(out, v)
		default:
			return nil, notNumber()
		}
		i = skipSpace(raw, i)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return out, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// rawAlert is an alert as written, so that a bad time can be reported with
// its field rather than as a time.Time parse error.
type rawAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     string            `json:"startsAt"`
	EndsAt       string            `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
}

func (p *parser) alerts() ([]Alert, error) {
	var out []Alert
	err := p.array("alerts", func(i int, off int64) error {
		field := fmt.Sprintf("alerts[%d]", i)
		var ra rawAlert
		if err := p.dec.Decode(&ra); err != nil {
			return p.jsonError(field, err, off)
		}
		a := Alert{Labels: ra.Labels, Annotations: ra.Annotations, GeneratorURL: ra.GeneratorURL}
		for _, t := range []struct {
			name string
			in   string
			out  *time.Time
		}{{"startsAt", ra.StartsAt, &a.StartsAt}, {"endsAt", ra.EndsAt, &a.EndsAt}} {
			if t.in == "" {
				continue
			}
			v, err := time.Parse(time.RFC3339Nano, t.in)
			if err != nil {
				return p.errorf(off, field+"."+t.name, "want an RFC 3339 time, got %q", t.in)
			}
			// Alertmanager writes the zero time for "no end".
			if v.Year() > 1 {
				*t.out = v
			}
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// WriteCase writes c, and truth unless it is nil, in the case format: one
// topology node, edge, series and alert per line, so that files diff well
// and errors name useful lines.
func WriteCase(w io.Writer, c *Case, truth *Truth) error {
	var b bytes.Buffer
	b.WriteString("{\n")
	fmt.Fprintf(&b, "  \"version\": %d,\n", CaseVersion)
	name, _ := json.Marshal(c.Name)
	fmt.Fprintf(&b, "  \"name\": %s,\n", name)
	b.WriteString("  \"topology\": {\n    \"nodes\": [")
	g := c.Topology
	if g == nil {
		g = &topology.Graph{}
	}
	for i, n := range g.Nodes {
		writeItem(&b, i, n)
	}
	b.WriteString("\n    ],\n    \"edges\": [")
	for i, e := range g.Edges {
		writeItem(&b, i, e)
	}
	b.WriteString("\n    ]\n  },\n")
	if m := c.Metrics; m != nil {
		fmt.Fprintf(&b, "  \"metrics\": {\n    \"start\": %s, \"step\": %s,\n    \"series\": [", formatTime(m.Start), formatTime(m.Step))
		for i, s := range m.Series {
			if i > 0 {
				b.WriteByte(',')
			}
			node, _ := json.Marshal(s.Node)
			name, _ := json.Marshal(s.Name)
			fmt.Fprintf(&b, "\n      {\"node\": %s, \"name\": %s, \"values\": [", node, name)
			for j, v := range s.Values {
				if j > 0 {
					b.WriteByte(',')
				}
				if math.IsNaN(v) || math.IsInf(v, 0) {
					b.WriteString("null")
				} else {
					b.WriteString(formatFloat(v))
				}
			}
			b.WriteString("]}")
		}
		b.WriteString("\n    ]\n  },\n")
	}
	b.WriteString("  \"alerts\": [")
	for i, a := range c.Alerts {
		writeItem(&b, i, a)
	}
	b.WriteString("\n  ],\n")
	fmt.Fprintf(&b, "  \"detectedAt\": %s", formatTime(c.DetectedAt))
	if truth != nil {
		t, err := json.Marshal(truth)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, ",\n  \"truth\": %s", t)
	}
	b.WriteString("\n}\n")
	_, err := w.Write(b.Bytes())
	return err
}

func writeItem(b *bytes.Buffer, i int, v any) {
	if i > 0 {
		b.WriteByte(',')
	}
	data, _ := json.Marshal(v)
	b.WriteString("\n      ")
	b.Write(data)
}

// formatFloat writes v with six significant digits, enough for any metric
// and compact for long series.
func formatFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// formatTime writes seconds exactly.
func formatTime(sec float64) string {
	if math.IsNaN(sec) || math.IsInf(sec, 0) {
		return "0"
	}
	return strconv.FormatFloat(sec, 'f', -1, 64)
}

func formatUnix(sec float64) string {
	return time.Unix(int64(math.Floor(sec)), 0).UTC().Format(time.RFC3339)
}
