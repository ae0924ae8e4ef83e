package online

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Signal is one metric family a capture reads: one PromQL range query for
// every node of a kind, whatever the number of nodes.
type Signal struct {
	// Name is the series name in the case (the formats README's names carry
	// meaning; others are ranked generically).
	Name string
	// Kind is the kind of topology node the series are expected on (pod,
	// service, node), or empty for any kind. It scopes the fallback; the
	// series called Name go to whatever node their labels name.
	Kind string
	// Fallback, when not empty, is a PromQL expression over the standard
	// exporters (cAdvisor, kube-state-metrics, node-exporter) used for the
	// nodes that have no series called Name. It may use $sel (the label
	// matchers of the capture, to put inside braces) and $rate (a rate
	// window). Its result must carry the Kind's identity labels.
	Fallback string
}

// identityLabels are the labels that name a node of each kind: a fallback
// is aggregated by them, and used for the nodes the signal's own series
// do not name.
var identityLabels = map[string][]string{
	"pod":     {"cluster", "namespace", "pod"},
	"service": {"cluster", "namespace", "service"},
	"node":    {"cluster", "node"},
}

// DefaultSignals are the formats README's names, each read first as a
// series of that name (a recording rule or an exporter of Panorama's
// simulator) and, for pods and Kubernetes nodes, from the standard
// exporters where none exists.
func DefaultSignals() []Signal {
	const (
		pod  = "sum by (cluster, namespace, pod) "
		node = " by (cluster, node) "
	)
	return []Signal{
		{Name: "request_rate", Kind: "service"},
		{Name: "error_ratio", Kind: "service"},
		{Name: "latency_p50_seconds", Kind: "service"},
		{Name: "latency_p99_seconds", Kind: "service"},
		{Name: "cpu_usage_cores", Kind: "pod",
			Fallback: pod + `(rate(container_cpu_usage_seconds_total{container!="",$sel}[$rate]))`},
		{Name: "cpu_throttled_ratio", Kind: "pod",
			Fallback: pod + `(rate(container_cpu_cfs_throttled_periods_total{container!="",$sel}[$rate])) / ` +
				pod + `(rate(container_cpu_cfs_periods_total{container!="",$sel}[$rate]))`},
		{Name: "memory_working_set_bytes", Kind: "pod",
			Fallback: pod + `(container_memory_working_set_bytes{container!="",$sel})`},
		{Name: "restarts_total", Kind: "pod",
			Fallback: pod + `(kube_pod_container_status_restarts_total{$sel})`},
		{Name: "network_transmit_errors_rate", Kind: "pod",
			Fallback: pod + `(rate(container_network_transmit_errors_total{$sel}[$rate]))`},
		{Name: "cpu_utilization", Kind: "node",
			Fallback: `1 - avg` + node + `(rate(node_cpu_seconds_total{mode="idle",$sel}[$rate]))`},
		{Name: "memory_utilization", Kind: "node",
			Fallback: `1 - max` + node + `(node_memory_MemAvailable_bytes{$sel}) / max` + node + `(node_memory_MemTotal_bytes{$sel})`},
		{Name: "disk_io_utilization", Kind: "node",
			Fallback: `max` + node + `(rate(node_disk_io_time_seconds_total{$sel}[$rate]))`},
		{Name: "network_errors_rate", Kind: "node",
			Fallback: `sum` + node + `(rate(node_network_receive_errs_total{$sel}[$rate])) + sum` + node + `(rate(node_network_transmit_errs_total{$sel}[$rate]))`},
		{Name: "ready", Kind: "node",
			Fallback: `max` + node + `(kube_node_status_condition{condition="Ready",status="true",$sel})`},
	}
}

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// scope is what the topology says about where its nodes live: the label
// values a query is restricted to.
type scope struct {
	clusters, namespaces []string
}

// maxAlternatives bounds a regexp matcher: past it, the matcher is left out
// and the mapping to nodes does the filtering, so a query stays short.
const maxAlternatives = 200

// selector returns the label matchers for a signal of kind, to put inside
// braces (empty when nothing restricts it): the topology's clusters, or no
// cluster label at all (a single Prometheus without external labels as the
// federator), and for pods and services their namespaces.
func (s scope) selector(kind string) string {
	var parts []string
	add := func(label string, values []string, orUnset bool) {
		if len(values) == 0 || len(values) > maxAlternatives {
			return
		}
		quoted := make([]string, len(values))
		for i, v := range values {
			quoted[i] = regexp.QuoteMeta(v)
		}
		if orUnset {
			quoted = append(quoted, "")
		}
		parts = append(parts, fmt.Sprintf("%s=~%q", label, strings.Join(quoted, "|")))
	}
	add("cluster", s.clusters, true)
	if kind == "pod" || kind == "service" {
		add("namespace", s.namespaces, false)
	}
	return strings.Join(parts, ",")
}

// query returns the PromQL expression of a signal: the series called Name,
// resampled on the case's grid (the last sample of each step, so a series
// that stops is seen to stop), or the fallback for nodes without it. The
// series called Name keep every label, so that one of a kind the signal
// does not expect (a managed database's error_ratio, labelled database=…)
// still goes to its node; they are restricted by cluster only, and the
// fallback, over exporters with many more series, by namespace too.
func (sg Signal) query(sc scope, lookback, rateWindow time.Duration) string {
	q := fmt.Sprintf("last_over_time(%s{%s}[%s])", sg.Name, sc.selector(""), promDuration(lookback))
	keys := identityLabels[sg.Kind]
	if keys == nil || sg.Fallback == "" {
		return q
	}
	by := strings.Join(keys, ", ")
	fb := strings.NewReplacer("$sel", sc.selector(sg.Kind), "$rate", promDuration(rateWindow)).Replace(sg.Fallback)
	return fmt.Sprintf("%s or on (%s) (%s)", q, by, fb)
}

// alertsQuery reads the firing alerts as rule engines record them, in the
// topology's clusters or in none (rules evaluated above the clusters, a
// Prometheus without external labels).
func (s scope) alertsQuery(lookback time.Duration) string {
	return fmt.Sprintf(`last_over_time(ALERTS{alertstate="firing",%s}[%s])`, s.selector(""), promDuration(lookback))
}

// forStateQuery reads when each alert became active.
func (s scope) forStateQuery(lookback time.Duration) string {
	return fmt.Sprintf(`last_over_time(ALERTS_FOR_STATE{%s}[%s])`, s.selector(""), promDuration(lookback))
}

func (sg Signal) validate() error {
	if !metricName.MatchString(sg.Name) {
		return fmt.Errorf("signal %q: not a metric name", sg.Name)
	}
	if sg.Kind != "" && identityLabels[sg.Kind] == nil {
		return fmt.Errorf("signal %s: kind %q; use pod, service, node or leave it empty", sg.Name, sg.Kind)
	}
	return nil
}

// promDuration writes d as PromQL does (whole milliseconds at least).
func promDuration(d time.Duration) string {
	ms := max(d.Milliseconds(), 1)
	if ms%1000 == 0 {
		return fmt.Sprintf("%ds", ms/1000)
	}
	return fmt.Sprintf("%dms", ms)
}

// sortedSet returns the distinct non-empty values, sorted.
func sortedSet(vals []string) []string {
	out := slices.DeleteFunc(slices.Clone(vals), func(s string) bool { return s == "" })
	slices.Sort(out)
	return slices.Compact(out)
}
