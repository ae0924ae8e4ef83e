package topology

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestDecodeReadme(t *testing.T) {
	f, err := os.Open("testdata/readme.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := Decode(f)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(g.Nodes) != 6 || len(g.Edges) != 5 {
		t.Fatalf("got %d nodes and %d edges, want 6 and 5", len(g.Nodes), len(g.Edges))
	}
	pod := g.Nodes[2]
	if pod.ID != PodID("east", "shop", "cart-7d9f-x2") || pod.Kind != KindPod || pod.Cluster != "east" || pod.Labels["node"] != "ip-10-0-1-7" {
		t.Errorf("pod node = %+v", pod)
	}
	if ext := g.Nodes[5]; ext.Kind != "external" {
		t.Errorf("generic node kind = %q, want external", ext.Kind)
	}
	if e := g.Edges[2]; e != (Edge{From: pod.ID, To: NodeID("east", "ip-10-0-1-7"), Kind: EdgeRunsOn}) {
		t.Errorf("edge 2 = %+v", e)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // substrings of the error
	}{
		{"empty", "", []string{"topology: empty input"}},
		{"null", "null", []string{"line 1: topology: want a JSON object, got null"}},
		{"array", "[]", []string{"want a JSON object, got an array"}},
		{"truncated", "{\"nodes\": [\n{\"id\": \"a\"", []string{"line 2: topology.nodes[0]: unexpected end of input"}},
		{"syntax", "{\"nodes\": [\n{\"id\": \"a\", \"kind\": \"x\"},\n{\"id\" \"b\"}]}", []string{"line 3: topology.nodes[1]: invalid character"}},
		{"trailing", "{}\n{}", []string{"line 2: topology: unexpected data after the object"}},
		{"nodes not array", `{"nodes": {"id": "a"}}`, []string{"line 1: topology.nodes: want an array, got an object"}},
		{"wrong type", "{\"nodes\": [\n {\"id\": 7, \"kind\": \"pod\"}]}", []string{"line 2: topology.nodes[0].id: want a string, got JSON number"}},
		{"wrong label type", "{\"nodes\": [{\"id\": \"a\", \"kind\": \"pod\",\n \"labels\": {\"pod\": true}}]}", []string{"line 2: topology.nodes[0].labels", "want a string, got JSON bool"}},
		{"bad unknown field", `{"extra": [1, }`, []string{"topology.extra: invalid character"}},
		{
			"validation",
			`{"nodes": [
  {"id": "a", "kind": "pod"},
  {"id": "", "kind": "pod"},
  {"id": "a", "kind": ""}
 ],
 "edges": [
  {"from": "a", "to": "a", "kind": "calls"},
  {"from": "", "to": "a", "kind": "calls"},
  {"from": "a", "to": "a", "kind": ""},
  {"from": "a", "to": "pod/x", "kind": "selects"}
 ]}`,
			[]string{
				"line 3: topology.nodes[1].id: empty",
				`line 4: topology.nodes[2].id: duplicate node "a", first at topology.nodes[0]`,
				"line 4: topology.nodes[2].kind: empty",
				"line 8: topology.edges[1].from: empty",
				"line 9: topology.edges[2].kind: empty",
				`line 10: topology.edges[3].to: unknown node "pod/x"`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Decode(strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("Decode succeeded with %+v, want an error", g)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeReadError(t *testing.T) {
	_, err := Decode(iotest.ErrReader(os.ErrClosed))
	if err == nil || !strings.Contains(err.Error(), "read topology") {
		t.Fatalf("err = %v, want a read error", err)
	}
}

func TestDecodeAcceptsNullAndCase(t *testing.T) {
	g, err := Decode(strings.NewReader(`{"Nodes": [{"id": "x", "kind": "queue"}], "edges": null}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 1 || g.Edges != nil {
		t.Fatalf("got %+v", g)
	}
}

func TestValidate(t *testing.T) {
	g := &Graph{
		Nodes: []Node{{ID: "pod/e/ns/p", Kind: KindPod}},
		Edges: []Edge{{From: "pod/e/ns/p", To: "pod/x", Kind: EdgeRunsOn}},
	}
	err := g.Validate()
	if err == nil || err.Error() != `topology.edges[0].to: unknown node "pod/x"` {
		t.Fatalf("Validate() = %v", err)
	}
	if err := (*Graph)(nil).Validate(); err == nil {
		t.Fatal("nil graph validated")
	}

	many := &Graph{}
	for range maxProblems + 5 {
		many.Nodes = append(many.Nodes, Node{ID: "dup", Kind: KindPod})
	}
	err = many.Validate()
	if lines := strings.Count(err.Error(), "\n") + 1; lines != maxProblems+1 || !strings.HasSuffix(err.Error(), "… and 4 more problems") {
		t.Fatalf("Validate() with many problems = %v", err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	want := &Graph{
		Nodes: []Node{
			{ID: ClusterID("east"), Kind: KindCluster},
			{ID: NodeID("east", "n1"), Kind: KindNode, Cluster: "east", Labels: map[string]string{"node": "n1"}},
		},
		Edges: []Edge{{From: NodeID("east", "n1"), To: ClusterID("east"), Kind: EdgeMemberOf}},
	}
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"nodes":[{"id":"cluster/east","kind":"cluster"},{"id":"node/east/n1","kind":"node","cluster":"east","labels":{"node":"n1"}}],"edges":[{"from":"node/east/n1","to":"cluster/east","kind":"member_of"}]}`
	if string(data) != wantJSON {
		t.Fatalf("JSON =\n%s\nwant\n%s", data, wantJSON)
	}
	got, err := Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(got)
	if !bytes.Equal(again, data) {
		t.Fatalf("round trip changed the graph:\n%s\n%s", data, again)
	}
}

func FuzzDecode(f *testing.F) {
	readme, err := os.ReadFile("testdata/readme.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(readme),
		"",
		"null",
		"{}",
		`{"nodes":[{"id":"a","kind":"pod","labels":{"pod":"a"}}],"edges":[{"from":"a","to":"a","kind":"calls"}]}`,
		`{"nodes":[null,{"id":1}],"edges":[{"from":"a"}]}`,
		`{"nodes":{"id":"a"},"x":[[[{}]]]}`,
		"{\"nodes\":[\n{\"id\":\"\\ud800\",\"kind\":\"k\"}]}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Decode(bytes.NewReader(data))
		if err != nil {
			if g != nil {
				t.Fatalf("Decode returned a graph and an error: %v", err)
			}
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("decoded graph does not validate: %v", err)
		}
		// What Decode accepts must survive a round trip and a merge.
		out, err := json.Marshal(g)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if len(again.Nodes) != len(g.Nodes) || len(again.Edges) != len(g.Edges) {
			t.Fatalf("round trip changed sizes: %s", out)
		}
		if err := Merge(g, again).Validate(); err != nil {
			t.Fatalf("merged graph does not validate: %v", err)
		}
	})
}

// The formats README's own topology block calls a frontend service that is
// not in its node list; case files may do the same.
func TestDecodeImplicitNodes(t *testing.T) {
	data, err := os.ReadFile("testdata/readme-block.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(bytes.NewReader(data)); err == nil || !strings.Contains(err.Error(), `line 11: topology.edges[0].from: unknown node "service/east/shop/frontend"`) {
		t.Fatalf("strict Decode = %v, want the unknown endpoint refused", err)
	}
	g, err := DecodeWith(bytes.NewReader(data), DecodeOptions{ImplicitNodes: true})
	if err != nil {
		t.Fatalf("DecodeWith: %v", err)
	}
	if len(g.Nodes) != 5 {
		t.Fatalf("got %d nodes, want the 4 listed and 1 implicit", len(g.Nodes))
	}
	if n := g.Nodes[4]; n.ID != "service/east/shop/frontend" || n.Kind != KindService {
		t.Errorf("implicit node = %+v", n)
	}

	for _, tc := range []struct {
		id   string
		want NodeKind
	}{
		{"service/east/shop/frontend", KindService},
		{"database/east/orders", "database"},
		{"payments.example.com", "external"},
		{"/odd", "external"},
	} {
		if got := ImplicitKind(tc.id); got != tc.want {
			t.Errorf("ImplicitKind(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}

	// Empty endpoints are still refused, and nothing is added twice.
	g = &Graph{Edges: []Edge{
		{From: "a/x", To: "b/y", Kind: EdgeCalls},
		{From: "b/y", To: "a/x", Kind: EdgeCalls},
		{From: "", To: "a/x", Kind: EdgeCalls},
	}}
	if added := g.AddImplicitNodes(); !reflect.DeepEqual(added, []string{"a/x", "b/y"}) {
		t.Errorf("AddImplicitNodes() = %q", added)
	}
	if err := g.Validate(); err == nil || err.Error() != "topology.edges[2].from: empty" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestDecodeLineBase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"{\"nodes\": [\n{\"id\": \"\", \"kind\": \"pod\"}]}", "line 11: topology.nodes[0].id: empty"},
		{"{\"nodes\": [\n{\"id\" 1}]}", "line 11: topology.nodes[0]: invalid character"},
		{"{\"nodes\": 3}", "line 10: topology.nodes: want an array"},
	} {
		_, err := DecodeWith(strings.NewReader(tc.in), DecodeOptions{Line: 10})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeWith(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}
