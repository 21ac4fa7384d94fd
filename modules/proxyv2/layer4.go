package proxyv2

import (
	"io"
	"net"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/metrics"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler receives the PROXY protocol in a layer4 route, with the same
// policy as the listener wrapper. Later handlers and matchers see the
// client's address, the header's fields are {l4.proxy.*} placeholders and
// {l4.proxy.peer} is the load balancer that sent the header.
// Bytes that a prefetching matcher already read (such as a TLS ClientHello
// sent in the same segment as the header) are kept in order.
type Handler struct {
	Policy

	logger *zap.Logger
	drops  *dropLog
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.proxy_v2",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision validates the policy and registers the metrics.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := h.provision("proxy_v2"); err != nil {
		return err
	}
	h.drops = newDropLog(h.logger)
	return metrics.Register(ctx, headersTotal)
}

// Cleanup logs the drops not yet summed up.
func (h *Handler) Cleanup() error {
	if h.drops != nil {
		h.drops.stop()
	}
	return nil
}

// Handle receives the header and passes the connection on with the
// client's addresses. A connection it refuses is counted and logged once
// and returned without error: the layer4 server closes it.
func (h *Handler) Handle(cx *layer4.Connection, next layer4.Handler) error {
	peer := cx.RemoteAddr()
	trusted := h.trusts(peer)
	if !trusted && h.Untrusted == UntrustedReject {
		report(h.drops, cx, ResultUntrusted, errUntrusted)
		return nil
	}
	// Take over what prefetching matchers buffered, so that the bytes
	// after the header are delivered exactly once and in order.
	buffered := make([]byte, len(cx.MatchingBytes()))
	if _, err := io.ReadFull(cx, buffered); err != nil {
		report(h.drops, cx, ResultError, err)
		return nil
	}
	conn := &l4Conn{Conn: cx.Conn, rest: buffered}
	if trusted {
		_ = cx.SetReadDeadline(time.Now().Add(time.Duration(h.Timeout)))
	}
	var rcv received
	res, err := h.receive(h.logger, conn, cx.Conn, trusted, &rcv)
	if trusted {
		_ = cx.SetReadDeadline(time.Time{})
	}
	report(h.drops, cx, res, err)
	if err != nil {
		return nil
	}
	conn.rest = append(rcv.rest[:len(rcv.rest):len(rcv.rest)], conn.rest...)
	conn.remote, conn.local = rcv.remote, rcv.local
	var header = &rcv.header
	if !rcv.hasHeader {
		header = nil
	}
	if repl, ok := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(replacerFunc(header, peer, L4PlaceholderPrefix))
		repl.Set("l4.conn.remote_addr", conn.remote)
		repl.Set("l4.conn.local_addr", conn.local)
	}
	return next.Handle(cx.Wrap(conn))
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens, with the
// options of the listener wrapper (see unmarshalPolicyBlock).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return h.unmarshalPolicyBlock(d)
}

// l4Conn is a layer4 connection after its header: it delivers the bytes
// read past the header first and reports the header's addresses.
type l4Conn struct {
	net.Conn
	rest          []byte
	remote, local net.Addr
}

// Read delivers the bytes read past the header, then the socket's.
func (c *l4Conn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr returns the client's address.
func (c *l4Conn) RemoteAddr() net.Addr {
	if c.remote == nil {
		return c.Conn.RemoteAddr()
	}
	return c.remote
}

// LocalAddr returns the address the client connected to.
func (c *l4Conn) LocalAddr() net.Addr {
	if c.local == nil {
		return c.Conn.LocalAddr()
	}
	return c.local
}

// NetConn returns the underlying socket.
func (c *l4Conn) NetConn() net.Conn { return c.Conn }

// Interface guards
var (
	_ caddy.Provisioner     = (*Handler)(nil)
	_ caddy.CleanerUpper    = (*Handler)(nil)
	_ layer4.NextHandler    = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
