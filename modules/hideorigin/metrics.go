package hideorigin

import "github.com/prometheus/client_golang/prometheus"

// Package-level collectors, registered into each config's registry by
// internal/metrics. Labels take a fixed set of values.
var (
	metricRewrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "hide_origin", Name: "rewrites_total",
		Help: "Origin identities rewritten or identifying headers removed, by place (header, body).",
	}, []string{"place"})
	metricActions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "hide_origin", Name: "actions_total",
		Help: "Responses hide_origin changed wholesale, by action (generic_error, undecodable, range_refetch).",
	}, []string{"action"})
	metricLock = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "origin_lock", Name: "requests_total",
		Help: "Requests checked by origin_lock, by result (ok, missing, malformed, unknown_key, bad_signature, stale, replay, cache_full, cluster_unavailable, not_allowed).",
	}, []string{"result"})
)

// The children touched on every request, resolved once.
var (
	rewritesHeader = metricRewrites.WithLabelValues("header")
	rewritesBody   = metricRewrites.WithLabelValues("body")
	lockOK         = metricLock.WithLabelValues("ok")
)
