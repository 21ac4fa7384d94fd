package stick

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// connTracker is what the listener wrapper and the layer4 handler share:
// count a connection under a key, refuse it when a reject rule holds, count
// its bytes and release the entry when it closes.
type connTracker struct {
	// The table.
	Table string `json:"table"`
	// Reject rules: the connection is closed, before anything is read from
	// it, when any rule holds for its entry once the connection is counted
	// (so `conn_cur gt 100` refuses the 101st concurrent connection).
	Reject []Condition `json:"reject,omitempty"`

	tbl    *table.Table
	conds  []compiled
	bytes  bool
	layer  string
	logger *zap.Logger
	full   *throttle
}

// throttle lets a warning through at most once a second, so that a table
// full of held entries under attack does not flood the log.
type throttle struct{ last atomic.Int64 }

func (th *throttle) allow() bool {
	if th == nil {
		return true
	}
	now := time.Now().UnixNano()
	last := th.last.Load()
	return now-last >= int64(time.Second) && th.last.CompareAndSwap(last, now)
}

func (c *connTracker) provision(ctx caddy.Context, directive, layer string) error {
	c.logger = ctx.Logger()
	c.layer = layer
	c.full = new(throttle)
	t, err := lookupTable(ctx, c.Table)
	if err != nil {
		return fmt.Errorf("%s: %v", directive, err)
	}
	c.tbl = t
	if c.conds, err = compileAll(c.Table, t, c.Reject); err != nil {
		return fmt.Errorf("%s: %v", directive, err)
	}
	s := t.Schema()
	c.bytes = s.Has(table.BytesInCnt) || s.Has(table.BytesInRate) || s.Has(table.BytesOutCnt) || s.Has(table.BytesOutRate)
	return nil
}

// open counts a new connection under k. It returns the held entry, or
// ok=false when a reject rule holds (the entry is then released). A full
// table lets the connection through untracked (valid=false).
func (c *connTracker) open(k table.Key, remote string) (ref table.Ref, ok bool) {
	ref, err := c.tbl.Acquire(k, table.Events{Conn: true})
	if err != nil {
		if errors.Is(err, table.ErrFull) && c.full.allow() {
			c.logger.Warn("connection not tracked (at most one such line a second)", zap.String("table", c.Table), zap.String("remote", remote), zap.Error(err))
		}
		return table.Ref{}, true
	}
	if rule, hit := firstHeld(&tracked{tbl: c.tbl, ref: ref}, c.conds); hit {
		c.tbl.Release(ref, table.Events{ConnEnd: true})
		rejections.WithLabelValues(c.Table, c.layer).Inc()
		c.logger.Debug("connection rejected", zap.String("table", c.Table), zap.String("remote", remote), zap.String("rule", rule.text))
		return table.Ref{}, false
	}
	return ref, true
}

// addrKey is the key of a remote address for an ip or ipv6 table.
func addrKey(t *table.Table, addr net.Addr) (table.Key, error) {
	ip, _ := netaddr.IP(addr)
	return t.Schema().KeyFromAddr(ip)
}

// trackedConn releases its entry, with the bytes it carried, when closed.
// A lazy trackedConn (one accepted from another listener wrapper, such as
// proxy_v2, whose RemoteAddr may wait for a header) counts itself on its
// first read or write, in the connection's own goroutine, so that the
// accept loop never waits for a client; a rejected one is closed there,
// before the reader (TLS) sees any byte.
type trackedConn struct {
	net.Conn
	c        *connTracker
	ref      table.Ref
	in, out  atomic.Uint64
	countsIO bool

	lazy      bool
	startOnce sync.Once
	refused   error
	once      sync.Once
}

// errRejected is what a rejected lazy connection's reader gets.
var errRejected = errors.New("connection rejected by a stick table rule")

// start tracks a lazy connection once and reports whether it was refused.
func (tc *trackedConn) start() error {
	if !tc.lazy {
		return nil
	}
	tc.startOnce.Do(func() {
		remote := tc.Conn.RemoteAddr()
		k, err := addrKey(tc.c.tbl, remote)
		if err != nil {
			return // no usable address (e.g. a refused PROXY header): untracked
		}
		ref, ok := tc.c.open(k, remote.String())
		if !ok {
			tc.refused = errRejected
			_ = tc.Conn.Close()
			return
		}
		tc.ref = ref
	})
	return tc.refused
}

// Read counts bytes from the client.
func (tc *trackedConn) Read(b []byte) (int, error) {
	if err := tc.start(); err != nil {
		return 0, err
	}
	n, err := tc.Conn.Read(b)
	if tc.countsIO {
		tc.in.Add(uint64(n))
	}
	return n, err
}

// Write counts bytes to the client.
func (tc *trackedConn) Write(b []byte) (int, error) {
	if err := tc.start(); err != nil {
		return 0, err
	}
	n, err := tc.Conn.Write(b)
	if tc.countsIO {
		tc.out.Add(uint64(n))
	}
	return n, err
}

// Close closes the connection and releases the entry once. A lazy
// connection closed before its first read or write was never counted.
func (tc *trackedConn) Close() error {
	if tc.lazy {
		tc.startOnce.Do(func() { tc.refused = net.ErrClosed })
	}
	err := tc.Conn.Close()
	tc.release()
	return err
}

func (tc *trackedConn) release() {
	tc.once.Do(func() {
		if tc.ref.Valid() {
			tc.c.tbl.Release(tc.ref, table.Events{ConnEnd: true, In: tc.in.Load(), Out: tc.out.Load()})
		}
	})
}

// NetConn returns the wrapped connection (as crypto/tls does), for code
// that looks for the underlying TCP connection.
func (tc *trackedConn) NetConn() net.Conn { return tc.Conn }

// ListenerWrapper (`caddy.listeners.stick`, in `listener_wrappers` as
// `stick <table> { reject ... }`) counts every accepted connection under its
// source address: conn_cnt, conn_rate and conn_cur (held until it closes),
// and bytes_in/out when stored. A connection for which a reject rule holds
// is closed right after accept, before any byte is read, so before any TLS
// handshake. Place it after proxy_v2 (whose connections report the real
// client address) and before tls: behind proxy_v2 the connection is counted
// and checked when the server first reads from it (so the accept loop never
// waits for a PROXY header), still before TLS reads a byte. The table must
// be of type ip or ipv6.
type ListenerWrapper struct {
	connTracker
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.listeners.stick", New: func() caddy.Module { return new(ListenerWrapper) }}
}

// Provision finds the table and compiles the rules.
func (lw *ListenerWrapper) Provision(ctx caddy.Context) error {
	if err := lw.provision(ctx, "stick listener wrapper", layerListener); err != nil {
		return err
	}
	if typ := lw.tbl.Schema().Type; typ != table.KeyIP && typ != table.KeyIPv6 {
		return fmt.Errorf("stick listener wrapper: table %s has %s keys; connections are keyed by address and need an ip or ipv6 table", lw.Table, typ)
	}
	return nil
}

// WrapListener wraps ln.
func (lw *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	return &stickListener{Listener: ln, lw: lw}
}

type stickListener struct {
	net.Listener
	lw *ListenerWrapper
}

// Accept returns the next connection that no reject rule refuses. A plain
// TCP connection is counted and checked here; a connection from another
// wrapper (proxy_v2, whose address may only be known once its header
// arrives) is counted on its first read, in its own goroutine.
func (l *stickListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if _, direct := conn.(*net.TCPConn); !direct {
			return &trackedConn{Conn: conn, c: &l.lw.connTracker, countsIO: l.lw.bytes, lazy: true}, nil
		}
		k, err := addrKey(l.lw.tbl, conn.RemoteAddr())
		if err != nil {
			return conn, nil
		}
		ref, ok := l.lw.open(k, conn.RemoteAddr().String())
		if !ok {
			_ = conn.Close()
			continue
		}
		if !ref.Valid() {
			return conn, nil
		}
		return &trackedConn{Conn: conn, c: &l.lw.connTracker, ref: ref, countsIO: l.lw.bytes}, nil
	}
}

var (
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
)
