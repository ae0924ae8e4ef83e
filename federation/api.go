package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/grafana/regexp"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/route"
	"github.com/prometheus/common/version"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/notifications"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"github.com/thanos-io/thanos/pkg/query"

	"github.com/panorama-obs/panorama/internal/server"
)

// Mount adds the federator's HTTP endpoints under mux-style patterns:
// Prometheus' own /api/v1 (with the partial_response and dedup parameters
// of a Thanos Querier) and /api/v1/stores.
func (f *Federator) Mount(handle func(pattern string, h http.Handler)) {
	r := route.New()
	f.api.Register(r)
	handle("/api/v1/", server.GzipFast(http.StripPrefix("/api/v1", f.withRequestOptions(r))))
	handle("/api/v1/stores", f.whenReady(f.serveStores))
	handle("/api/v1/metadata", f.whenReady(f.serveMetadata))
}

func (f *Federator) newAPI(reg prometheus.Registerer, gatherer prometheus.Gatherer, cors *regexp.Regexp) *apiv1.API {
	host, scheme := "", "http"
	if f.opts.ExternalURL != nil {
		host, scheme = f.opts.ExternalURL.Host, f.opts.ExternalURL.Scheme
	}
	flags := f.opts.Flags
	if flags == nil {
		flags = map[string]string{}
	}
	cfg := config.DefaultConfig
	cfg.GlobalConfig.ExternalLabels = f.opts.ExternalLabels
	api := apiv1.NewAPI(f.engine, f.queryable, nil, noExemplars{},
		func(context.Context) apiv1.ScrapePoolsRetriever { return noTargets{} },
		func(context.Context) apiv1.TargetRetriever { return noTargets{} },
		func(context.Context) apiv1.AlertmanagerRetriever { return noTargets{} },
		func() config.Config { return cfg },
		flags,
		apiv1.GlobalURLOptions{ListenAddress: f.opts.ListenAddress, Host: host, Scheme: scheme},
		func(h http.HandlerFunc) http.HandlerFunc { return f.whenReady(h) },
		noTSDB{},
		"",
		false,
		f.logger.With("component", "api"),
		func(context.Context) apiv1.RulesRetriever { return noTargets{} },
		5e7, 10, 1048576,
		false,
		cors,
		func() (apiv1.RuntimeInfo, error) {
			cwd, _ := os.Getwd()
			host, _ := os.Hostname()
			return apiv1.RuntimeInfo{StartTime: f.startTime, CWD: cwd, Hostname: host, ServerTime: time.Now(), ReloadConfigSuccess: true, LastConfigTime: f.startTime}, nil
		},
		&apiv1.PrometheusVersion{Version: version.Version, Revision: version.Revision, Branch: version.Branch, BuildUser: version.BuildUser, BuildDate: version.BuildDate, GoVersion: version.GoVersion},
		func() []notifications.Notification { return nil },
		func() (<-chan notifications.Notification, func(), bool) { return nil, func() {}, false },
		gatherer,
		reg,
		nil,
		false,
		remoteapi.MessageTypes{remoteapi.WriteV1MessageType},
		false, false, false, false,
		f.opts.LookbackDelta,
		false, false,
		nil,
		nil,
	)
	// Prometheus' JSON, with encoded answers spliced in (encoded.go).
	api.ClearCodecs()
	api.InstallCodec(encodedCodec{})
	return api
}

// whenReady answers 503 until every endpoint has been asked once, as
// Prometheus answers before its storage is open.
func (f *Federator) whenReady(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-f.endpoints.ready:
			h(w, r)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "Service Unavailable")
		}
	}
}

// maxFormBody is what Go's own form parsing reads of a POST body.
const maxFormBody = 10 << 20

// withRequestOptions reads partial_response and dedup (the parameters of a
// Thanos Querier) from the URL or a form body and hands them to the
// queryable through the request's context, and marks an instant query
// without stats or limit as one whose answer may come encoded
// (encoded.go). A form body is read from a
// copy, so that Prometheus' handlers parse the request exactly as they
// would have.
func (f *Federator) withRequestOptions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		form, err := peekForm(r)
		if err != nil {
			// Prometheus' handler meets the same body and answers for it.
			next.ServeHTTP(w, r)
			return
		}
		opts := f.queryable.defaults
		for _, p := range []struct {
			name string
			dst  *bool
		}{{"partial_response", &opts.PartialResponse}, {"dedup", &opts.Dedup}} {
			v := form.Get(p.name)
			if v == "" {
				continue
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter %q: %q is not a boolean (true or false)", p.name, v))
				return
			}
			*p.dst = b
		}
		ctx := WithRequestOptions(r.Context(), opts)
		if r.URL.Path == "/query" && form.Get("stats") == "" && form.Get("limit") == "" {
			// The instant query's answer only goes out as JSON.
			ctx = withEncodedResult(ctx)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// peekForm returns the request's URL and urlencoded-body parameters,
// leaving the body readable again.
func peekForm(r *http.Request) (url.Values, error) {
	form, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	if r.Body == nil || (r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch) {
		return form, nil
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/x-www-form-urlencoded" {
		return form, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBody+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
	if err != nil || len(body) > maxFormBody {
		return nil, errors.New("form body unreadable or too large")
	}
	bodyForm, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	// As in Go's Request.Form: body values first.
	for k, vs := range form {
		bodyForm[k] = append(bodyForm[k], vs...)
	}
	return bodyForm, nil
}

func writeAPIError(w http.ResponseWriter, code int, typ string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiv1.Response{Status: "error", ErrorType: typ, Error: err.Error()})
}

// serveStores answers /api/v1/stores as a Thanos Querier does: the
// endpoints by component type, each with its external label sets, time
// range, last successful check and last error (null while healthy).
// Endpoints that never answered their Info are listed under "unknown".
func (f *Federator) serveStores(w http.ResponseWriter, _ *http.Request) {
	data := map[string][]query.EndpointStatus{}
	for _, st := range f.endpoints.statuses() {
		typ := "unknown"
		if st.ComponentType != nil {
			typ = st.ComponentType.String()
		}
		if st.LabelSets == nil {
			st.LabelSets = []labels.Labels{}
		}
		data[typ] = append(data[typ], st)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(apiv1.Response{Status: "success", Data: data})
}

// noTargets answers the API's questions about scraping, rules and
// Alertmanagers: the federator has none of them.
type noTargets struct{}

func (noTargets) ScrapePools() []string                                 { return []string{} }
func (noTargets) TargetsActive() map[string][]*scrape.Target            { return nil }
func (noTargets) TargetsDropped() map[string][]*scrape.Target           { return nil }
func (noTargets) TargetsDroppedCounts() map[string]int                  { return nil }
func (noTargets) ScrapePoolConfig(string) (*config.ScrapeConfig, error) { return nil, errNoScrape }
func (noTargets) Alertmanagers() []*url.URL                             { return nil }
func (noTargets) DroppedAlertmanagers() []*url.URL                      { return nil }
func (noTargets) RuleGroups() []*rules.Group                            { return nil }
func (noTargets) AlertingRules() []*rules.AlertingRule                  { return nil }

var (
	errNoScrape = errors.New("the federator scrapes nothing; ask a collector")
	errNoTSDB   = errors.New("the federator has no local TSDB; ask a collector")
)

// noTSDB answers the API's TSDB status and admin endpoints.
type noTSDB struct{}

func (noTSDB) CleanTombstones() error                                         { return errNoTSDB }
func (noTSDB) Delete(context.Context, int64, int64, ...*labels.Matcher) error { return errNoTSDB }
func (noTSDB) Snapshot(string, bool) error                                    { return errNoTSDB }
func (noTSDB) Stats(string, int) (*tsdb.Stats, error)                         { return nil, errNoTSDB }
func (noTSDB) WALReplayStatus() (tsdb.WALReplayStatus, error) {
	return tsdb.WALReplayStatus{}, errNoTSDB
}
func (noTSDB) BlockMetas() ([]tsdb.BlockMeta, error) { return nil, errNoTSDB }

// noExemplars answers /api/v1/query_exemplars: the StoreAPI carries none.
type noExemplars struct{}

func (noExemplars) ExemplarQuerier(context.Context) (storage.ExemplarQuerier, error) {
	return noExemplars{}, nil
}

func (noExemplars) Select(int64, int64, ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return []exemplar.QueryResult{}, nil
}
