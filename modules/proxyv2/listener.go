package proxyv2

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/metrics"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// ListenerWrapper receives the PROXY protocol (v1 and v2) on a Caddy
// listener, with a strict trust policy: connections from trusted load
// balancers must start with a valid header, and everything in Caddy then
// sees the client's address. Place it first in listener_wrappers, before
// tls. The header is read by the connection's own goroutine, never by the
// accept loop, so a slow sender delays only itself.
type ListenerWrapper struct {
	Policy

	logger *zap.Logger
	drops  *dropLog
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.proxy_v2",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// Provision validates the policy, registers the metrics and, inside an
// HTTP server, makes each request's connection known to proxy_v2_vars.
func (lw *ListenerWrapper) Provision(ctx caddy.Context) error {
	lw.logger = ctx.Logger()
	if err := lw.provision("proxy_v2"); err != nil {
		return err
	}
	lw.drops = newDropLog(lw.logger)
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterConnContext(rememberConn)
	}
	return metrics.Register(ctx, headersTotal)
}

// Cleanup logs the drops not yet summed up.
func (lw *ListenerWrapper) Cleanup() error {
	if lw.drops != nil {
		lw.drops.stop()
	}
	return nil
}

// WrapListener wraps ln so that its connections receive the PROXY protocol.
func (lw *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, lw: lw}
}

// UnmarshalCaddyfile sets up the listener wrapper from Caddyfile tokens
// (see unmarshalPolicyBlock).
func (lw *ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return lw.unmarshalPolicyBlock(d)
}

// listener is a net.Listener whose connections receive the PROXY protocol.
type listener struct {
	net.Listener
	lw        *ListenerWrapper
	misplaced sync.Once // explains a misplaced wrapper once
}

// Accept returns the next connection, closing those from untrusted sources
// at once when the policy rejects them.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if _, decrypted := c.(*tls.Conn); decrypted {
			l.misplaced.Do(func() {
				l.lw.logger.Error("proxy_v2 is placed after tls in listener_wrappers, where a PROXY header can never arrive; " +
					"put it first: listener_wrappers { proxy_v2 {...} tls }; connections are dropped until then")
			})
			report(l.lw.drops, c, ResultError, errMisplaced)
			_ = c.Close()
			continue
		}
		trusted := l.lw.trusts(c.RemoteAddr())
		if !trusted && l.lw.Untrusted == UntrustedReject {
			report(l.lw.drops, c, ResultUntrusted, errUntrusted)
			_ = c.Close()
			continue
		}
		return &Conn{Conn: c, lw: l.lw, trusted: trusted}, nil
	}
}

// Conn is a connection accepted by the proxy_v2 listener wrapper. Its first
// read (or, from a trusted source, its first address lookup) receives the
// header; RemoteAddr and LocalAddr then return the addresses it carried.
type Conn struct {
	net.Conn
	lw      *ListenerWrapper // its policy and logs
	trusted bool

	once     sync.Once
	received received
	err      error

	deadlineMu sync.Mutex
	deadline   time.Time // the reader's own read deadline
}

// start receives the header (or refuses the connection) exactly once.
func (c *Conn) start() {
	c.once.Do(func() {
		if c.trusted {
			c.deadlineMu.Lock()
			limit := time.Now().Add(time.Duration(c.lw.Timeout))
			if !c.deadline.IsZero() && c.deadline.Before(limit) {
				limit = c.deadline
			}
			_ = c.Conn.SetReadDeadline(limit)
			c.deadlineMu.Unlock()
		}
		res, err := c.lw.receive(c.lw.logger, c.Conn, c.Conn, c.trusted, &c.received)
		if c.trusted {
			c.deadlineMu.Lock()
			_ = c.Conn.SetReadDeadline(c.deadline)
			c.deadlineMu.Unlock()
		}
		report(c.lw.drops, c.Conn, res, err)
		if err != nil {
			c.err = &errRefused{result: res, err: err}
			_ = c.Conn.Close()
		}
	})
}

// Read reads the payload that follows the header.
func (c *Conn) Read(p []byte) (int, error) {
	c.start()
	if c.err != nil {
		return 0, c.err
	}
	if len(c.received.rest) > 0 {
		n := copy(p, c.received.rest)
		c.received.rest = c.received.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr returns the client's address from the header (for a trusted
// source, waiting for the header), or the socket's peer.
func (c *Conn) RemoteAddr() net.Addr {
	if !c.trusted {
		return c.Conn.RemoteAddr()
	}
	c.start()
	return c.received.remote
}

// LocalAddr returns the destination from the header, or the socket's own
// address.
func (c *Conn) LocalAddr() net.Addr {
	if !c.trusted {
		return c.Conn.LocalAddr()
	}
	c.start()
	return c.received.local
}

// SetDeadline sets both deadlines, remembering the read deadline so the
// header timeout does not replace it.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rememberDeadline(t)
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline, remembering it so the header
// timeout does not replace it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rememberDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// rememberDeadline keeps the reader's own read deadline.
func (c *Conn) rememberDeadline(t time.Time) {
	c.deadlineMu.Lock()
	c.deadline = t
	c.deadlineMu.Unlock()
}

// Header returns the header the connection carried, or nil when it carried
// none. It waits for the header like RemoteAddr.
func (c *Conn) Header() *wire.Header {
	if !c.trusted {
		return nil
	}
	c.start()
	if !c.received.hasHeader || c.err != nil {
		return nil
	}
	return &c.received.header
}

// Peer returns the socket's peer: the load balancer that sent the header
// (HAProxy's fc_src), or the client itself on a connection without one.
func (c *Conn) Peer() net.Addr { return c.Conn.RemoteAddr() }

// NetConn returns the underlying socket.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Buffered returns how many bytes read past the header are still to be
// delivered; at zero, the socket beneath (NetConn) can be read directly,
// for example to splice. Only the connection's reader may call it.
func (c *Conn) Buffered() int {
	c.start()
	return len(c.received.rest)
}

// connCtxKey holds the request's *Conn in its context.
type connCtxKey struct{}

// rememberConn is registered as an HTTP server ConnContext: it finds the
// proxy_v2 Conn under any TLS or other wrapping. It never reads.
func rememberConn(ctx context.Context, c net.Conn) context.Context {
	for range 8 {
		switch v := c.(type) {
		case *Conn:
			return context.WithValue(ctx, connCtxKey{}, v)
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return ctx
		}
	}
	return ctx
}

var (
	errUntrusted = errUntrustedSource{}
	errMisplaced = errors.New("proxy_v2 listener wrapper placed after tls")
)

// errUntrustedSource is the reason for refusing an untrusted source.
type errUntrustedSource struct{}

// Error describes the refusal.
func (errUntrustedSource) Error() string { return "source is not in trust and untrusted is reject" }

// Interface guards
var (
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
	_ caddy.CleanerUpper    = (*ListenerWrapper)(nil)
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
)
