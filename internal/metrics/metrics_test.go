package metrics

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterTwiceAndClash(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "rampart_test_total", Help: "test"})
	if err := Register(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := Register(ctx, c); err != nil {
		t.Fatalf("registering the same collector again: %v", err)
	}
	clash := prometheus.NewGauge(prometheus.GaugeOpts{Name: "rampart_test_total", Help: "other help"})
	if err := Register(ctx, clash); err == nil {
		t.Fatal("a different collector with the same name was accepted")
	}
}
