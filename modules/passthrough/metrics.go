package passthrough

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the passthrough handler. The route label is the route's name
// from the configuration (never a client's SNI) and the upstream label an
// address from the configuration, so cardinality is bounded by the config.
var metrics = struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	errors      *prometheus.CounterVec
	healthy     *prometheus.GaugeVec
}{
	connections: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "passthrough", Name: "connections_total",
		Help: "Connections relayed by passthrough routes.",
	}, []string{"route"}),
	active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "rampart", Subsystem: "passthrough", Name: "connections_active",
		Help: "Connections being relayed by passthrough routes now.",
	}, []string{"route"}),
	bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "passthrough", Name: "bytes_total",
		Help: "Bytes relayed by passthrough routes; direction is up (client to backend) or down.",
	}, []string{"route", "direction"}),
	errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "passthrough", Name: "errors_total",
		Help: "Passthrough connections that failed; reason is no_upstream, dial or proxy_header.",
	}, []string{"route", "reason"}),
	healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "rampart", Subsystem: "passthrough", Name: "upstream_healthy",
		Help: "1 when the upstream of a passthrough route passes its health checks, 0 when it is out.",
	}, []string{"route", "upstream"}),
}
