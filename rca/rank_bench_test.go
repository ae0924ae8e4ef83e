package rca

import (
	"bytes"
	"testing"
)

// benchCase is a simulated incident on about 1,000 topology nodes, cropped
// to 30 minutes of 15-second samples around its detection.
func benchCase(tb testing.TB) *Case {
	tb.Helper()
	for i := 0; ; i++ {
		c, _ := simulate(7, i, 330)
		m := c.Metrics
		if m.Step != 15 || len(c.Topology.Nodes) < 950 {
			continue
		}
		det := int((c.DetectedAt - m.Start) / m.Step)
		from := max(0, det-80)
		to := from + 120
		if to > m.Len() {
			continue
		}
		for k := range m.Series {
			m.Series[k].Values = m.Series[k].Values[from:to]
		}
		m.Start += float64(from) * m.Step
		return c
	}
}

func BenchmarkRank1000Nodes(b *testing.B) {
	c := benchCase(b)
	for b.Loop() {
		Rank(c, Options{})
	}
	b.ReportMetric(float64(len(c.Topology.Nodes)), "nodes")
	b.ReportMetric(float64(len(c.Metrics.Series)), "series")
	b.ReportMetric(float64(c.Metrics.Len()), "samples")
}

func BenchmarkParseCase1000Nodes(b *testing.B) {
	var buf bytes.Buffer
	if err := WriteCase(&buf, benchCase(b), nil); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseCase(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
