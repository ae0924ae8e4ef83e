// Package query serves Jaeger's HTTP query API over a span store, with
// Jaeger's exact JSON, so that the Jaeger UI and Grafana's Jaeger data
// source work unchanged.
package query

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/panorama-obs/panorama/tracing/store"
)

// Store is what the API reads.
type Store interface {
	store.Reader
	store.DependencyStore
}

// API is the Jaeger query API.
type API struct {
	store  Store
	logger *slog.Logger
	now    func() time.Time
}

// New returns the API over st.
func New(st Store, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{store: st, logger: logger, now: time.Now}
}

// Register mounts the endpoints with handle (a ServeMux's Handle).
func (a *API) Register(handle func(pattern string, h http.Handler)) {
	handle("GET /api/services", http.HandlerFunc(a.services))
	handle("GET /api/services/{service}/operations", http.HandlerFunc(a.operationsLegacy))
	handle("GET /api/operations", http.HandlerFunc(a.operations))
	handle("GET /api/traces", http.HandlerFunc(a.search))
	handle("GET /api/traces/{traceID}", http.HandlerFunc(a.trace))
	handle("GET /api/dependencies", http.HandlerFunc(a.dependencies))
}

// Handler returns the endpoints on their own mux.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.Register(mux.Handle)
	return mux
}

func (a *API) write(w http.ResponseWriter, r *http.Request, code int, resp *Response) {
	var (
		b   []byte
		err error
	)
	if r.FormValue("prettyPrint") == "true" {
		b, err = json.MarshalIndent(resp, "", "    ")
	} else {
		b, err = json.Marshal(resp)
	}
	if err != nil {
		a.logger.Error("Encoding a Jaeger API answer failed", "err", err)
		code, b = http.StatusInternalServerError, []byte(`{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":500,"msg":"encoding the answer failed"}]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code == http.StatusInternalServerError {
		a.logger.Error("Jaeger API request failed", "path", r.URL.Path, "err", err)
	}
	a.write(w, r, code, &Response{Errors: []Error{{Code: code, Msg: err.Error()}}})
}

func (a *API) services(w http.ResponseWriter, r *http.Request) {
	svcs, err := a.store.GetServices(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	a.write(w, r, http.StatusOK, &Response{Data: svcs, Total: len(svcs)})
}

func (a *API) operationsLegacy(w http.ResponseWriter, r *http.Request) {
	ops, err := a.store.GetOperations(r.Context(), store.OperationQuery{ServiceName: r.PathValue("service")})
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	names := []string{}
	for _, op := range ops {
		if !slices.Contains(names, op.Name) {
			names = append(names, op.Name)
		}
	}
	a.write(w, r, http.StatusOK, &Response{Data: names, Total: len(names)})
}

func (a *API) operations(w http.ResponseWriter, r *http.Request) {
	q, err := ParseOperations(r.URL.Query())
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ops, err := a.store.GetOperations(r.Context(), q)
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	data := make([]Operation, 0, len(ops))
	for _, op := range ops {
		data = append(data, Operation{Name: op.Name, SpanKind: op.SpanKind})
	}
	a.write(w, r, http.StatusOK, &Response{Data: data, Total: len(data)})
}

func (a *API) search(w http.ResponseWriter, r *http.Request) {
	p, err := ParseSearch(r.URL.Query(), a.now())
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, err)
		return
	}
	traces := []Trace{}
	var errs []Error
	if len(p.TraceIDs) > 0 {
		for _, id := range p.TraceIDs {
			td, err := a.store.GetTrace(r.Context(), id)
			if errors.Is(err, store.ErrTraceNotFound) {
				errs = append(errs, Error{Msg: err.Error(), TraceID: TraceIDString(id)})
				continue
			}
			if err != nil {
				a.fail(w, r, http.StatusInternalServerError, err)
				return
			}
			traces = append(traces, FromTraces(td, true)...)
		}
	} else {
		found, err := a.store.FindTraces(r.Context(), p.Query)
		if err != nil {
			a.fail(w, r, http.StatusInternalServerError, err)
			return
		}
		for _, td := range found {
			traces = append(traces, FromTraces(td, true)...)
		}
	}
	a.write(w, r, http.StatusOK, &Response{Data: traces, Errors: errs})
}

func (a *API) trace(w http.ResponseWriter, r *http.Request) {
	id, err := ParseTraceID(r.PathValue("traceID"))
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, paramErr("traceID", err))
		return
	}
	td, err := a.store.GetTrace(r.Context(), id)
	if errors.Is(err, store.ErrTraceNotFound) {
		a.fail(w, r, http.StatusNotFound, err)
		return
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	raw := r.FormValue("raw") == "true"
	a.write(w, r, http.StatusOK, &Response{Data: FromTraces(td, !raw)})
}

func (a *API) dependencies(w http.ResponseWriter, r *http.Request) {
	end, lookback, err := ParseDependencies(r.URL.Query(), a.now())
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, err)
		return
	}
	links, err := a.store.GetDependencies(r.Context(), end, lookback)
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	svc := r.FormValue("service")
	out := make([]store.DependencyLink, 0, len(links))
	for _, l := range links {
		if svc == "" || l.Parent == svc || l.Child == svc {
			out = append(out, l)
		}
	}
	a.write(w, r, http.StatusOK, &Response{Data: out})
}
