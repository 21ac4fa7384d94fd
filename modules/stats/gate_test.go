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

	"github.com/prometheus/client_golang/prometheus"
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
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{ // as caddyhttp.PrepareRequest makes it
		caddyhttp.TrustedProxyVarKey: false,
		caddyhttp.ClientIPVarKey:     "192.0.2.100",
	})
	ctx, cancel := context.WithCancel(ctx)
	return baseRequest.WithContext(ctx), repl, cancel
}

var baseRequest = httptest.NewRequest(http.MethodGet, "/", nil)

// TestGateSkipsHeld: a held address is never selected; when every address
// is held there is none; the response of the last attempt is recorded
// once, when the request ends.
func TestGateSkipsHeld(t *testing.T) {
	const a, b = "192.0.2.1:1001", "192.0.2.2:1002"
	t.Cleanup(func() { upstate.Set(a, upstate.Ready, false, "test"); upstate.Set(b, upstate.Ready, false, "test") })
	g := &gate{inner: new(reverseproxy.RoundRobinSelection)}
	pool := testPool(a, b)
	upstate.Set(a, upstate.Drain, false, "test")
	for range 10 {
		r, _, cancel := request()
		if u := g.Select(pool, r, nil); u == nil || u.Dial != b {
			t.Fatalf("selected %v while %s drains", u, a)
		}
		cancel()
	}
	upstate.Set(b, upstate.Maint, false, "test")
	r, _, cancel := request()
	if u := g.Select(pool, r, nil); u != nil {
		t.Fatalf("selected %s with every upstream held", u.Dial)
	}
	cancel()

	upstate.Set(a, upstate.Ready, false, "test")
	upstate.Set(b, upstate.Ready, false, "test")

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
	flights.settle(false)
	if got := counterValue(last.responses[5]) - before; got != 0 {
		t.Errorf("5xx counted %v times before the request ended", got)
	}
	cancel()
	flights.settle(false)
	if got := counterValue(last.responses[5]) - before; got != 1 {
		t.Errorf("5xx of the last attempt's upstream counted %v times, want 1", got)
	}
}

// TestFiguresExactWhenRead: every request that has ended is counted once,
// by status class and latency, as soon as the figures are read (the
// upstream rows settle the queue first), however many ended at once; the
// requests still running are counted when they end.
func TestFiguresExactWhenRead(t *testing.T) {
	const a = "192.0.2.3:1003"
	g := &gate{inner: new(reverseproxy.RoundRobinSelection)}
	pool := testPool(a)
	fig := figuresFor(a)
	before2, before5 := counterValue(fig.responses[2]), counterValue(fig.responses[5])
	beforeLatency := histogramCount(fig)
	const n = 300
	var running []context.CancelFunc
	for i := range n {
		r, repl, cancel := request()
		g.Select(pool, r, nil)
		repl.Set("http.reverse_proxy.status_code", 200+300*(i%2))
		repl.Set("http.reverse_proxy.upstream.latency", time.Millisecond)
		if i < n-10 {
			cancel()
		} else {
			running = append(running, cancel)
		}
	}
	upstreamRows()
	if got2, got5 := counterValue(fig.responses[2])-before2, counterValue(fig.responses[5])-before5; got2 != 145 || got5 != 145 {
		t.Errorf("counted %v 2xx and %v 5xx of 290 ended requests, want 145 each", got2, got5)
	}
	for _, cancel := range running {
		cancel()
	}
	upstreamRows()
	if got2, got5, lat := counterValue(fig.responses[2])-before2, counterValue(fig.responses[5])-before5, histogramCount(fig)-beforeLatency; got2 != n/2 || got5 != n/2 || lat != n {
		t.Errorf("counted %v 2xx, %v 5xx, %v latencies of %d requests", got2, got5, lat, n)
	}
}

// TestKeepStickyCookie: with Caddy's cookie policy, a drain with
// keep_sticky still gets the requests whose cookie names it (the cookie
// Caddy's policy itself set), and no other; a plain drain gets none.
func TestKeepStickyCookie(t *testing.T) {
	const a, b = "192.0.2.4:1004", "192.0.2.5:1005"
	t.Cleanup(func() { upstate.Set(a, upstate.Ready, false, "test") })
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	policy := &reverseproxy.CookieHashSelection{Name: "lb", Secret: "s3cret"}
	if err := policy.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	pool := testPool(a, b)
	rec := httptest.NewRecorder()
	if u := policy.Select(testPool(a), httptest.NewRequest(http.MethodGet, "/", nil), rec); u == nil || u.Dial != a {
		t.Fatalf("cookie policy chose %v", u)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookie policy set %d cookies", len(cookies))
	}
	g := &gate{inner: policy, bound: boundBy(policy, nil)}
	if g.bound == nil {
		t.Fatal("the cookie policy binds no request")
	}
	pick := func(withCookie bool) string {
		r, _, end := request()
		defer end()
		if withCookie {
			r = r.Clone(r.Context()) // its own header
			r.AddCookie(cookies[0])
		}
		u := g.Select(pool, r, httptest.NewRecorder())
		if u == nil {
			return ""
		}
		return u.Dial
	}
	upstate.Set(a, upstate.Drain, true, "test")
	for range 5 {
		if got := pick(true); got != a {
			t.Errorf("drain keep_sticky: the client bound to %s went to %q", a, got)
		}
		if got := pick(false); got != b {
			t.Errorf("drain keep_sticky: a new client went to %q", got)
		}
	}
	upstate.Set(a, upstate.Drain, false, "test")
	if got := pick(true); got != b {
		t.Errorf("plain drain: the client bound to %s went to %q", a, got)
	}
	if boundBy(new(reverseproxy.IPHashSelection), nil) != nil {
		t.Error("ip_hash treated as persistence")
	}
}

// BenchmarkSelect is the cost of the figures and states per request: the
// round_robin policy alone, and wrapped by the gate (a request counted,
// its response recorded once its context has ended), alternated three
// times in one run.
func BenchmarkSelect(b *testing.B) {
	pool := testPool("192.0.2.1:2001", "192.0.2.2:2002")
	for range 3 {
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
				flights.settle(false) // the responses are recorded within the measure
				b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// cpuTime is the process's CPU time (user and system): on a machine
// shared with other work, wall-clock ns/op measures the neighbours too.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func histogramCount(f *figures) uint64 {
	var m dto.Metric
	_ = f.latency.(prometheus.Metric).Write(&m)
	return m.GetHistogram().GetSampleCount()
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
