// Package upstate holds the operator's runtime state of upstream addresses
// (ready, drain, maint) and the registry of the upstreams that running
// configurations use. It imports no Caddy package: the stats glue sets the
// states from the admin API, and the proxies' glue (reverse_proxy through
// the stats glue's selection wrapper, passthrough directly) read them when
// they choose an upstream.
//
// Both live in package state, for the life of the process: a state set on
// an address holds across config reloads until it is set to ready again.
package upstate

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is an operator's runtime state of an upstream address.
type State uint32

// The states. Drain sends no new requests or connections to the address and
// lets the current ones finish; Maint also reports the upstream unhealthy.
const (
	Ready State = iota
	Drain
	Maint
)

var names = [...]string{Ready: "ready", Drain: "drain", Maint: "maint"}

// String returns the state's name: ready, drain or maint.
func (s State) String() string {
	if int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// Parse reads a state's name.
func Parse(s string) (State, error) {
	for i, n := range names {
		if n == s {
			return State(i), nil
		}
	}
	return Ready, fmt.Errorf("unknown state %q (want %s)", s, strings.Join(names[:], ", "))
}

// Cell is the runtime state of one address. Cells are never freed: an
// address is configuration, so their number is bounded by the addresses
// the process was ever configured with.
type Cell struct {
	state  atomic.Uint32
	sticky atomic.Bool // a drain that keeps the clients bound to the address
	mu     sync.Mutex
	by     string    // who set the state last
	at     time.Time // when
}

// State returns the address's state.
func (c *Cell) State() State { return State(c.state.Load()) }

// Held reports whether the address is out of selection (drain or maint).
func (c *Cell) Held() bool { return c.state.Load() != uint32(Ready) }

// KeepsSticky reports whether the address drains but keeps the clients a
// load-balancing policy binds to it (a cookie, a stick-table entry).
func (c *Cell) KeepsSticky() bool { return c.sticky.Load() && c.State() == Drain }

// Info describes a cell for the stats page.
type Info struct {
	// State is the runtime state.
	State State
	// KeepSticky is set on a drain that keeps bound clients.
	KeepSticky bool
	// By says who set it last ("" if never set).
	By string
	// At is when it was set last.
	At time.Time
}

// Info returns the cell's state, who set it and when.
func (c *Cell) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{State: c.State(), KeepSticky: c.KeepsSticky(), By: c.by, At: c.at}
}

var (
	cells sync.Map     // address → *Cell
	held  atomic.Int64 // cells not ready: a fast path for selection
)

// For returns the cell of an address, creating it (ready) if needed.
func For(addr string) *Cell {
	if c, ok := cells.Load(addr); ok {
		return c.(*Cell)
	}
	c, _ := cells.LoadOrStore(addr, new(Cell))
	return c.(*Cell)
}

// AnyHeld reports whether some address is in drain or maint; while none is,
// selection need not look at the cells.
func AnyHeld() bool { return held.Load() > 0 }

// Set changes an address's state, recording who changed it, and returns
// the state it had. keepSticky applies to Drain only: the address keeps
// the clients bound to it by their load-balancing policy.
func Set(addr string, s State, keepSticky bool, by string) State {
	c := For(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sticky.Store(keepSticky && s == Drain)
	old := State(c.state.Swap(uint32(s)))
	switch {
	case old == Ready && s != Ready:
		held.Add(1)
	case old != Ready && s == Ready:
		held.Add(-1)
	}
	c.by, c.at = by, time.Now()
	return old
}

// Member is an upstream a running configuration uses: the stats page lists
// members, and the admin API changes the state only of addresses that are
// members.
type Member struct {
	// Kind is "reverse_proxy" or "passthrough".
	Kind string
	// Group names the handler or route the upstream belongs to.
	Group string
	// Addr is the upstream's dial address, the key of its Cell.
	Addr string
	// Active returns the requests or connections in flight to Addr.
	Active func() int64
	// Healthy reports what the proxy's health checks say of the upstream.
	Healthy func() bool
	// Checks, when set, returns the outcome of the proxy's own health
	// checks of the upstream (passthrough routes).
	Checks func() Checks
}

// Checks is what a proxy's active health checks know of an upstream.
type Checks struct {
	// LastAt is when the last check ended (zero before the first).
	LastAt time.Time
	// LastOK is the last check's result.
	LastOK bool
	// Fails counts the consecutive failed checks up to now.
	Fails int64
	// FailsTotal counts every failed check.
	FailsTotal uint64
}

var (
	membersMu sync.Mutex
	members   []*Member
)

// Join adds a member until the returned leave func is called (when the
// configuration that uses the upstream is unloaded).
func Join(m *Member) (leave func()) {
	membersMu.Lock()
	members = append(members, m)
	membersMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			membersMu.Lock()
			defer membersMu.Unlock()
			members = slices.DeleteFunc(members, func(x *Member) bool { return x == m })
		})
	}
}

// Members returns the current members, newest last. While a reload is under
// way the old and the new configuration's members are both listed.
func Members() []*Member {
	membersMu.Lock()
	defer membersMu.Unlock()
	return slices.Clone(members)
}

// Known reports whether an address is a member's.
func Known(addr string) bool {
	membersMu.Lock()
	defer membersMu.Unlock()
	for _, m := range members {
		if m.Addr == addr {
			return true
		}
	}
	return false
}
