// Package stats is Rampart's stats page and runtime upstream control: the
// admin API routes under /rampart/ (module admin.api.rampart_stats), the
// `rampart_stats` handler that serves the same page on a site, the
// per-upstream Prometheus figures rampart_upstream_*, and the drain and
// maintenance states of reverse_proxy and passthrough upstreams.
//
// The page reads the other modules through the running config, never by
// importing them: their Prometheus series in the config's registry, and
// the stick tables through the stick_tables admin module, by module name.
// reverse_proxy handlers are reached through the config's http app: the
// admin module wraps each handler's selection policy (see gate) when the
// config loads, before its servers start. The states live in package
// upstate and survive reloads.
package stats
