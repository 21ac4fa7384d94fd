package stats

import (
	"context"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	dto "github.com/prometheus/client_model/go"

	"github.com/rampart-edge/caddy-rampart/modules/stats/upstate"
)

func testPool(addrs ...string) reverseproxy.UpstreamPool {
	pool := reverseproxy.UpstreamPool{}
	for _, a := range addrs {
		pool = append(pool, &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: a})
	}
	return pool
}

// request returns a request with the context Caddy's server gives one
// (vars and replacer) and the func that ends it.
func request() (*http.Request, *caddy.Replacer, context.CancelFunc) {
	repl := caddy.NewReplacer()
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	ctx, cancel := context.WithCancel(ctx)
	return baseRequest.WithContext(ctx), repl, cancel
}

var baseRequest = httptest.NewRequest(http.MethodGet, "/", nil)

// TestGateSkipsHeld: a held address is never selected; when every address
// is held there is none; the response of the last attempt is recorded
// once, when the request ends.
func TestGateSkipsHeld(t *testing.T) {
	const a, b = "192.0.2.1:1001", "192.0.2.2:1002"
	t.Cleanup(func() { upstate.Set(a, upstate.Ready, "test"); upstate.Set(b, upstate.Ready, "test") })
	g := &gate{inner: new(reverseproxy.RoundRobinSelection)}
	pool := testPool(a, b)
	upstate.Set(a, upstate.Drain, "test")
	for range 10 {
		r, _, cancel := request()
		if u := g.Select(pool, r, nil); u == nil || u.Dial != b {
			t.Fatalf("selected %v while %s drains", u, a)
		}
		cancel()
	}
	upstate.Set(b, upstate.Maint, "test")
	r, _, cancel := request()
	if u := g.Select(pool, r, nil); u != nil {
		t.Fatalf("selected %s with every upstream held", u.Dial)
	}
	cancel()

	upstate.Set(a, upstate.Ready, "test")
	upstate.Set(b, upstate.Ready, "test")

	r, repl, cancel := request()
	first := g.Select(pool, r, nil) // an attempt that fails, then a retry
	second := g.Select(pool, r, nil)
	if first.Dial == second.Dial {
		t.Fatalf("round robin chose %s twice", first.Dial)
	}
	repl.Set("http.reverse_proxy.status_code", 503)
	repl.Set("http.reverse_proxy.upstream.latency", 3*time.Millisecond)
	last := figuresFor(second.Dial)
	before := counterValue(last.responses[5])
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for counterValue(last.responses[5]) == before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := counterValue(last.responses[5]) - before; got != 1 {
		t.Errorf("5xx of the last attempt's upstream counted %v times, want 1", got)
	}

}

// BenchmarkSelect is the cost of the figures and states per request: the
// round_robin policy alone, and wrapped by the gate (a request counted,
// its response recorded when its context ends).
func BenchmarkSelect(b *testing.B) {
	pool := testPool("192.0.2.1:2001", "192.0.2.2:2002")
	for _, bc := range []struct {
		name string
		sel  reverseproxy.Selector
	}{
		{"round_robin", new(reverseproxy.RoundRobinSelection)},
		{"gate", &gate{inner: new(reverseproxy.RoundRobinSelection)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			start := cpuTime()
			for b.Loop() {
				r, repl, cancel := request()
				bc.sel.Select(pool, r, nil)
				repl.Set("http.reverse_proxy.status_code", 200)
				repl.Set("http.reverse_proxy.upstream.latency", time.Millisecond)
				cancel()
			}
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's CPU time (user and system): on a machine
// shared with other work, wall-clock ns/op measures the neighbours too.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
