// Package metrics registers Rampart's package-level Prometheus collectors
// into each config's registry, one way for every module.
package metrics

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Register adds collectors to the config's metrics registry. A collector
// the registry already has (from a config it was loaded with before) is
// not an error: collectors live as long as the process, so counts survive
// reloads.
func Register(ctx caddy.Context, collectors ...prometheus.Collector) error {
	registry := ctx.GetMetricsRegistry()
	if registry == nil {
		return nil
	}
	for _, c := range collectors {
		if err := registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}
