package rca

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestScore(t *testing.T) {
	truth := &Truth{Root: []string{"p", "s"}, Strict: []string{"p"}}
	for _, tc := range []struct {
		ranking []string
		want    Hit
	}{
		{[]string{"p", "x"}, Hit{Pos: 1, Strict: true}},
		{[]string{"s", "p"}, Hit{Pos: 1}},
		{[]string{"x", "y", "s"}, Hit{Pos: 3}},
		{[]string{"x"}, Hit{}},
		{nil, Hit{}},
	} {
		if got := Score(tc.ranking, truth); got != tc.want {
			t.Errorf("Score(%v) = %+v, want %+v", tc.ranking, got, tc.want)
		}
	}
	// Without strict, the first root is the most precise answer.
	if h := Score([]string{"p"}, &Truth{Root: []string{"p", "s"}}); !h.Strict {
		t.Error("root[0] not strict when strict is absent")
	}
	if h := Score([]string{"s"}, &Truth{Root: []string{"p", "s"}}); h.Strict {
		t.Error("root[1] strict when strict is absent")
	}

	var a acc
	for _, h := range []Hit{{Pos: 1, Strict: true}, {Pos: 2}, {Pos: 5}, {}} {
		a.add(h)
	}
	s := a.scores()
	if s.Cases != 4 || s.AC1 != 0.25 || s.AC3 != 0.5 || s.AC5 != 0.75 || s.StrictAC1 != 0.25 {
		t.Errorf("scores = %+v", s)
	}
	// Avg@5 = mean of AC@1..AC@5 = (1+2+2+2+3)/4/5.
	if want := 10.0 / 20; s.Avg5 != want {
		t.Errorf("Avg@5 = %v, want %v", s.Avg5, want)
	}
}

func TestEvaluate(t *testing.T) {
	dir := t.TempDir()
	for i := range 4 {
		c, truth := Simulate(30, i)
		if i == 3 {
			truth = nil // a case without truth is skipped
		}
		var b bytes.Buffer
		if err := WriteCase(&b, c, truth); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, c.Name[:8]+string(rune('a'+i))+".json"), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	var progress atomic.Int64
	rep, err := Evaluate(files, EvalOptions{Workers: 2, Progress: func(done int) { progress.Store(int64(done)) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Cases != 3 || len(rep.Skipped) != 1 || progress.Load() != 4 {
		t.Fatalf("cases %d, skipped %v, progress %d", rep.Cases, rep.Skipped, progress.Load())
	}
	if len(rep.Methods) != 3 || rep.Methods[0].Method != "panorama" || rep.Methods[1].Method != "baro" || rep.Methods[2].Method != "nsigma" {
		t.Fatalf("methods = %+v", rep.Methods)
	}
	for _, m := range rep.Methods {
		if m.Overall.Cases != 3 || len(m.ByFault) == 0 || len(m.BySituation) == 0 {
			t.Errorf("%s: %+v", m.Method, m)
		}
		n := 0
		for _, g := range m.BySituation {
			n += g.Cases
		}
		if n < 3 {
			t.Errorf("%s: situations cover %d cases", m.Method, n)
		}
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 cases (1 skipped)", "AC@1", "strict AC@1", "overall  panorama", "panorama: ranking time mean"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}

	// A malformed file fails the run, naming the file.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"version": 1,`), 0o644)
	if _, err := Evaluate(append(files, bad), EvalOptions{}); err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("err = %v", err)
	}
}
