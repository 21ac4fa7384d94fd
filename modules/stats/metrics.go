package stats

import (
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rampart-edge/caddy-rampart/modules/stats/upstate"
)

// Per-upstream figures of reverse_proxy handlers. The upstream label is a
// dial address from the configuration (never client input), so
// cardinality is bounded by the config.
var (
	metricRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "upstream", Name: "requests_total",
		Help: "Requests reverse_proxy sent to an upstream (each attempt, retries included).",
	}, []string{"upstream"})
	metricResponses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "upstream", Name: "responses_total",
		Help: "Proxied requests by the upstream of their last attempt and the class of its response status (1xx to 5xx, or error when no response came).",
	}, []string{"upstream", "class"})
	metricLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "rampart", Subsystem: "upstream", Name: "latency_seconds",
		Help:    "Time from sending a request to an upstream to its response headers (Caddy's upstream latency), by upstream.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"upstream"})
	metricStateChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "upstream", Name: "state_changes_total",
		Help: "Runtime state changes made through the admin API or the stats page, by new state (ready, drain, maint).",
	}, []string{"state"})
)

// classes are the values of the class label, indexed by status/100 (0:
// no response).
var classes = [...]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

// figures are one upstream's series, resolved once.
type figures struct {
	requests  prometheus.Counter
	responses [len(classes)]prometheus.Counter
	latency   prometheus.Observer
}

var figs sync.Map // address → *figures

// figuresFor returns the series of an upstream address.
func figuresFor(addr string) *figures {
	if f, ok := figs.Load(addr); ok {
		return f.(*figures)
	}
	f := &figures{requests: metricRequests.WithLabelValues(addr), latency: metricLatency.WithLabelValues(addr)}
	for i, c := range classes {
		f.responses[i] = metricResponses.WithLabelValues(addr, c)
	}
	actual, _ := figs.LoadOrStore(addr, f)
	return actual.(*figures)
}

// record counts a finished request's response from Caddy's reverse_proxy
// placeholders: the status code of the last attempt and its latency.
func (f *figures) record(repl *caddy.Replacer) {
	if repl == nil {
		return
	}
	class := 0
	if v, ok := repl.Get("http.reverse_proxy.status_code"); ok {
		if code, ok := v.(int); ok && code >= 100 && code < 600 {
			class = code / 100
		}
	}
	f.responses[class].Inc()
	if v, ok := repl.Get("http.reverse_proxy.upstream.latency"); ok {
		if d, ok := v.(time.Duration); ok {
			f.latency.Observe(d.Seconds())
		}
	}
}

// registryCollector reports what the upstream registry knows: requests in
// flight and runtime state of every upstream the running configs use.
type registryCollector struct{}

var (
	inFlightDesc = prometheus.NewDesc("rampart_upstream_in_flight",
		"Requests (reverse_proxy) or connections (passthrough) in flight to an upstream.", []string{"kind", "upstream"}, nil)
	stateDesc = prometheus.NewDesc("rampart_upstream_state",
		"Runtime state of an upstream: 0 ready, 1 drain, 2 maint.", []string{"kind", "upstream"}, nil)
)

// Describe implements prometheus.Collector.
func (registryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inFlightDesc
	ch <- stateDesc
}

// Collect implements prometheus.Collector. An address used by several
// handlers (or routes) is reported once per kind: its count is the
// backend's.
func (registryCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[[2]string]bool{}
	for _, m := range upstate.Members() {
		k := [2]string{m.Kind, m.Addr}
		if seen[k] {
			continue
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(m.Active()), m.Kind, m.Addr)
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(upstate.For(m.Addr).State()), m.Kind, m.Addr)
	}
}
