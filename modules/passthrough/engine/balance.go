package engine

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Upstream is one backend address of a route, with the state that selection
// and health checks share. Its zero value (with Addr set) is healthy and
// idle.
type Upstream struct {
	// Addr is the dial address, host:port.
	Addr string
	// Conns, when set, counts the connections being relayed to Addr; the
	// upstreams of several routes (and of the configs before a reload) may
	// share one, as they share the backend. Nil: the upstream counts alone.
	Conns *Counter
	// Held, when set, reports whether an operator holds the upstream out of
	// selection (drain or maintenance): Pick skips it while it does, and
	// connections being relayed to it go on.
	Held func() bool

	own    Counter      // the count when Conns is nil
	down   atomic.Bool  // marked unhealthy by the health checker
	passes atomic.Int32 // consecutive successful checks while down
	fails  atomic.Int32 // consecutive failed checks while up

	checkedAt  atomic.Int64  // Unix ns when the last check ended, 0 before the first
	checkOK    atomic.Bool   // the last check's result
	failStreak atomic.Int64  // consecutive failed checks, up or down
	failsTotal atomic.Uint64 // failed checks
}

// CheckStats is what the health checks know of an upstream.
type CheckStats struct {
	// LastAt is when the last check ended (zero before the first).
	LastAt time.Time
	// LastOK is the last check's result.
	LastOK bool
	// Fails counts the consecutive failed checks up to now.
	Fails int64
	// FailsTotal counts every failed check.
	FailsTotal uint64
}

// Checks returns what the health checks know of the upstream.
func (u *Upstream) Checks() CheckStats {
	c := CheckStats{LastOK: u.checkOK.Load(), Fails: u.failStreak.Load(), FailsTotal: u.failsTotal.Load()}
	if ns := u.checkedAt.Load(); ns != 0 {
		c.LastAt = time.Unix(0, ns)
	}
	return c
}

// Counter counts connections in flight.
type Counter struct{ n atomic.Int64 }

// counter is the count the upstream uses.
func (u *Upstream) counter() *Counter {
	if u.Conns != nil {
		return u.Conns
	}
	return &u.own
}

// Healthy reports whether the upstream may receive connections.
func (u *Upstream) Healthy() bool { return !u.down.Load() }

// SetHealthy forces the health state (and resets the check streaks).
func (u *Upstream) SetHealthy(ok bool) {
	u.down.Store(!ok)
	u.passes.Store(0)
	u.fails.Store(0)
}

// Active returns how many connections are being relayed to the upstream.
func (u *Upstream) Active() int64 { return u.counter().n.Load() }

// Acquire counts a new connection; call the returned func when it ends.
func (u *Upstream) Acquire() (release func()) {
	c := u.counter()
	c.n.Add(1)
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			c.n.Add(-1)
		}
	}
}

// Policy names a selection policy.
type Policy string

// Selection policies.
const (
	RoundRobin Policy = "round_robin"
	LeastConn  Policy = "least_conn"
	Random     Policy = "random"
	First      Policy = "first"
	IPHash     Policy = "ip_hash"
)

// Policies lists the accepted policy names.
var Policies = []Policy{RoundRobin, LeastConn, Random, First, IPHash}

// ParsePolicy checks a policy name; "" means round_robin.
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return RoundRobin, nil
	}
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown lb_policy %q (want one of %v)", s, Policies)
}

// Balancer picks healthy upstreams by a policy.
type Balancer struct {
	// Policy chooses among the healthy upstreams.
	Policy Policy
	// Upstreams in configuration order (first and round_robin follow it).
	Upstreams []*Upstream
	next      atomic.Uint64
}

// Pick returns a healthy upstream for a client (the client's IP is used by
// ip_hash), skipping those in exclude (already tried), or nil when none is
// available.
func (b *Balancer) Pick(client netip.Addr, exclude []*Upstream) *Upstream {
	n := len(b.Upstreams)
	if n == 0 {
		return nil
	}
	usable := func(u *Upstream) bool {
		if !u.Healthy() || u.Held != nil && u.Held() {
			return false
		}
		for _, x := range exclude {
			if x == u {
				return false
			}
		}
		return true
	}
	switch b.Policy {
	case First:
		for _, u := range b.Upstreams {
			if usable(u) {
				return u
			}
		}
		return nil
	case LeastConn:
		var best *Upstream
		ties := 0
		for _, u := range b.Upstreams {
			if !usable(u) {
				continue
			}
			switch {
			case best == nil || u.Active() < best.Active():
				best, ties = u, 1
			case u.Active() == best.Active():
				ties++ // reservoir sampling among equals spreads ties
				if rand.IntN(ties) == 0 {
					best = u
				}
			}
		}
		return best
	case Random:
		return b.scan(rand.IntN(n), usable)
	case IPHash:
		h := fnv.New32a()
		ip := client.As16()
		_, _ = h.Write(ip[:])
		return b.scan(int(h.Sum32()%uint32(n)), usable)
	default:
		return b.scan(int(b.next.Add(1)%uint64(n)), usable)
	}
}

// scan returns the first usable upstream from index start, wrapping.
func (b *Balancer) scan(start int, usable func(*Upstream) bool) *Upstream {
	n := len(b.Upstreams)
	for i := range n {
		if u := b.Upstreams[(start+i)%n]; usable(u) {
			return u
		}
	}
	return nil
}

// HealthCheck probes upstreams by opening a TCP connection.
type HealthCheck struct {
	// Interval between rounds of checks.
	Interval time.Duration
	// Timeout of one probe.
	Timeout time.Duration
	// Passes is how many consecutive successes bring a down upstream back.
	Passes int
	// Fails is how many consecutive failures take an up upstream out.
	Fails int
	// Port, when not 0, is probed instead of the upstream's own port.
	Port int
	// OnChange, when set, is called when an upstream changes state.
	OnChange func(u *Upstream, healthy bool)
}

// Run checks every upstream each interval until ctx ends (the context of
// the configuration that owns the upstreams).
func (hc *HealthCheck) Run(ctx context.Context, ups []*Upstream) {
	if hc.Interval <= 0 {
		return
	}
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		hc.Round(ctx, ups)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Round checks each upstream once, concurrently, and applies the result.
func (hc *HealthCheck) Round(ctx context.Context, ups []*Upstream) {
	done := make(chan struct{}, len(ups))
	for _, u := range ups {
		go func() {
			hc.Record(u, hc.probe(ctx, u.Addr))
			done <- struct{}{}
		}()
	}
	for range ups {
		<-done
	}
}

// Record applies one probe result to an upstream.
func (hc *HealthCheck) Record(u *Upstream, ok bool) {
	if ok {
		u.failStreak.Store(0)
	} else {
		u.failStreak.Add(1)
		u.failsTotal.Add(1)
	}
	u.checkOK.Store(ok)
	u.checkedAt.Store(time.Now().UnixNano())
	passes, fails := max(hc.Passes, 1), max(hc.Fails, 1)
	if ok {
		u.fails.Store(0)
		if u.down.Load() && int(u.passes.Add(1)) >= passes {
			u.SetHealthy(true)
			if hc.OnChange != nil {
				hc.OnChange(u, true)
			}
		}
		return
	}
	u.passes.Store(0)
	if !u.down.Load() && int(u.fails.Add(1)) >= fails {
		u.SetHealthy(false)
		if hc.OnChange != nil {
			hc.OnChange(u, false)
		}
	}
}

// probe reports whether a TCP connection to addr (or to Port on its
// host) opens within the timeout.
func (hc *HealthCheck) probe(ctx context.Context, addr string) bool {
	if hc.Port > 0 {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return false
		}
		addr = net.JoinHostPort(host, fmt.Sprint(hc.Port))
	}
	timeout := hc.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
