package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxProblems bounds how many validation problems one error lists, so a
// badly broken file gives a readable message rather than thousands of lines.
const maxProblems = 10

// Decode reads one topology block (the object found under "topology" in case
// files) from r and validates it. Unknown fields are ignored. A malformed block
// is refused with an error naming the field, its index and its line, e.g.
//
//	line 12: topology.edges[3].to: unknown node "pod/x"
func Decode(r io.Reader) (*Graph, error) {
	return DecodeWith(r, DecodeOptions{})
}

// DecodeOptions changes how DecodeWith reads a topology block.
type DecodeOptions struct {
	// Line is the line of the enclosing document on which the block
	// starts, so that errors name lines of that document rather than of the
	// block. Zero and one both mean the block starts the document.
	Line int
	// ImplicitNodes accepts edges whose endpoints are missing from the node
	// list, adding each missing endpoint as a node (see AddImplicitNodes),
	// rather than refusing them. Case files need it: an edge seen in traces
	// may name a service the Kubernetes view does not hold.
	ImplicitNodes bool
}

// DecodeWith is Decode with options.
func DecodeWith(r io.Reader, opts DecodeOptions) (*Graph, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	src := source{data: data, base: max(opts.Line, 1) - 1}
	g, pos, err := decode(src)
	if err != nil {
		return nil, err
	}
	if opts.ImplicitNodes {
		g.AddImplicitNodes()
	}
	if err := g.validate(pos); err != nil {
		return nil, err
	}
	return g, nil
}

// AddImplicitNodes adds a node for every edge endpoint that is not in the
// node list, with the kind ImplicitKind gives it, and returns the IDs added
// in the order the edges name them. Empty endpoints are left for Validate to
// report.
func (g *Graph) AddImplicitNodes() []string {
	known := make(map[string]bool, len(g.Nodes))
	for _, n := range g.Nodes {
		known[n.ID] = true
	}
	var added []string
	for _, e := range g.Edges {
		for _, id := range []string{e.From, e.To} {
			if id == "" || known[id] {
				continue
			}
			known[id] = true
			g.Nodes = append(g.Nodes, Node{ID: id, Kind: ImplicitKind(id)})
			added = append(added, id)
		}
	}
	return added
}

// ImplicitKind returns the kind of a node known only by its ID: the ID's
// prefix before the first '/' ("service" for service/east/shop/frontend), or
// "external" when the ID has no such prefix.
func ImplicitKind(id string) NodeKind {
	if i := strings.IndexByte(id, '/'); i > 0 {
		return NodeKind(id[:i])
	}
	return "external"
}

// Validate checks that every node has a unique, non-empty ID and a kind, and
// that every edge has a kind and joins two nodes of the graph. It reports up
// to ten problems, each naming the field and index, e.g.
//
//	topology.edges[3].to: unknown node "pod/x"
func (g *Graph) Validate() error {
	return g.validate(nil)
}

func (g *Graph) validate(pos *positions) error {
	if g == nil {
		return errors.New("topology: missing")
	}
	var (
		errs  []error
		extra int
	)
	report := func(list string, i int, field, format string, args ...any) {
		if len(errs) == maxProblems {
			extra++
			return
		}
		msg := fmt.Sprintf("topology.%s[%d].%s: %s", list, i, field, fmt.Sprintf(format, args...))
		if l := pos.line(list, i); l > 0 {
			msg = fmt.Sprintf("line %d: %s", l, msg)
		}
		errs = append(errs, errors.New(msg))
	}

	index := make(map[string]int, len(g.Nodes))
	for i, n := range g.Nodes {
		switch first, dup := index[n.ID]; {
		case n.ID == "":
			report("nodes", i, "id", "empty")
		case dup:
			report("nodes", i, "id", "duplicate node %q, first at topology.nodes[%d]", n.ID, first)
		default:
			index[n.ID] = i
		}
		if n.Kind == "" {
			report("nodes", i, "kind", "empty")
		}
	}
	for i, e := range g.Edges {
		for _, end := range []struct{ field, id string }{{"from", e.From}, {"to", e.To}} {
			if end.id == "" {
				report("edges", i, end.field, "empty")
			} else if _, ok := index[end.id]; !ok {
				report("edges", i, end.field, "unknown node %q", end.id)
			}
		}
		if e.Kind == "" {
			report("edges", i, "kind", "empty")
		}
	}
	if extra > 0 {
		errs = append(errs, fmt.Errorf("… and %d more problems", extra))
	}
	return errors.Join(errs...)
}

// positions remembers where each node and edge starts in the input, so that
// validation errors can name a line.
type positions struct {
	src          source
	nodes, edges []int64
}

// source is the input being decoded and the number of lines of the
// enclosing document that precede it.
type source struct {
	data []byte
	base int
}

// lineAt returns the 1-based line of the enclosing document holding byte
// offset off of the input.
func (s source) lineAt(off int64) int {
	return s.base + lineAt(s.data, off)
}

// line returns the 1-based line of element i of list, or 0 when unknown.
func (p *positions) line(list string, i int) int {
	if p == nil {
		return 0
	}
	offs := p.nodes
	if list == "edges" {
		offs = p.edges
	}
	if i >= len(offs) {
		return 0
	}
	return p.src.lineAt(offs[i])
}

// decode walks the top-level object token by token rather than unmarshalling
// it in one go, to learn the offset of every node and edge.
func decode(data source) (*Graph, *positions, error) {
	dec := json.NewDecoder(bytes.NewReader(data.data))
	pos := &positions{src: data}
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, jsonError(data, "topology", err)
	}
	if tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("line %d: topology: want a JSON object, got %s", data.lineAt(dec.InputOffset()), describe(tok))
	}

	g := &Graph{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, jsonError(data, "topology", err)
		}
		// Keys match case-insensitively, as they do when the block is
		// unmarshalled into a Graph as part of a larger document.
		switch key, _ := tok.(string); {
		case strings.EqualFold(key, "nodes"):
			g.Nodes, pos.nodes, err = decodeList[Node](dec, data, "topology.nodes")
		case strings.EqualFold(key, "edges"):
			g.Edges, pos.edges, err = decodeList[Edge](dec, data, "topology.edges")
		default:
			var skip json.RawMessage
			if err = dec.Decode(&skip); err != nil {
				err = jsonError(data, "topology."+key, err)
			}
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, jsonError(data, "topology", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("line %d: topology: unexpected data after the object", data.lineAt(dec.InputOffset()))
	}
	return g, pos, nil
}

// decodeList decodes a JSON array (or null) of T, returning the start offset
// of each element alongside.
func decodeList[T any](dec *json.Decoder, data source, field string) ([]T, []int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, jsonError(data, field, err)
	}
	if tok == nil {
		return nil, nil, nil
	}
	if tok != json.Delim('[') {
		return nil, nil, fmt.Errorf("line %d: %s: want an array, got %s", data.lineAt(dec.InputOffset()), field, describe(tok))
	}
	var (
		list []T
		offs []int64
	)
	for i := 0; dec.More(); i++ {
		off := skipSeparators(data.data, dec.InputOffset())
		var v T
		if err := dec.Decode(&v); err != nil {
			return nil, nil, jsonError(data, fmt.Sprintf("%s[%d]", field, i), typeErrorAt(err, off))
		}
		list = append(list, v)
		offs = append(offs, off)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, jsonError(data, field, err)
	}
	return list, offs, nil
}

// typeErrorAt makes the offset of a type error, which Decode counts from the
// start of the value it was decoding, count from the start of data.
func typeErrorAt(err error, base int64) error {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		typ.Offset += base
	}
	return err
}

// jsonError turns an encoding/json error into one naming the field and line.
func jsonError(data source, field string, err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("line %d: %s: %w", data.lineAt(syntax.Offset), field, err)
	case errors.As(err, &typ):
		if typ.Field != "" {
			field += "." + typ.Field
		}
		return fmt.Errorf("line %d: %s: want %s, got JSON %s", data.lineAt(typ.Offset), field, typeName(typ), typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if len(bytes.TrimSpace(data.data)) == 0 {
			return fmt.Errorf("%s: empty input", field)
		}
		return fmt.Errorf("line %d: %s: unexpected end of input", data.lineAt(int64(len(data.data))), field)
	}
	return fmt.Errorf("%s: %w", field, err)
}

func typeName(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	}
	return "a " + e.Type.Kind().String()
}

func describe(tok json.Token) string {
	switch tok := tok.(type) {
	case nil:
		return "null"
	case json.Delim: // only an opening one can start a value
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

// lineAt returns the 1-based line holding byte offset off of data.
func lineAt(data []byte, off int64) int {
	off = max(0, min(off, int64(len(data))))
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// skipSeparators moves off past the whitespace and comma that the decoder
// leaves before the next array element.
func skipSeparators(data []byte, off int64) int64 {
	for off < int64(len(data)) && strings.IndexByte(" \t\r\n,", data[off]) >= 0 {
		off++
	}
	return off
}
