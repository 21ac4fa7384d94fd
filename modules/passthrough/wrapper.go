package passthrough

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(ListenerWrapper{})
}

// ListenerWrapper runs layer4 routes on every accepted connection before the
// next listener wrapper (Caddy's TLS) sees it. A route whose handler is
// terminal (the passthrough handler, close, ...) keeps the connection; a
// connection that no route takes, or whose route falls through, is handed
// on, with the bytes the matchers read still unread. In JSON it goes in a
// server's listener_wrappers before "tls"; the passthrough app puts it in
// front of the servers on the HTTPS port by itself.
//
// It does what caddy-l4's "layer4" listener wrapper does, with one
// difference: each connection owns its matching buffer. caddy-l4 returns
// the buffer of a handed-on connection to a pool while Caddy's TLS still
// reads the ClientHello from it.
type ListenerWrapper struct {
	// Routes are layer4 routes, tried in order.
	Routes layer4.RouteList `json:"routes,omitempty"`

	// MatchingTimeout bounds the time a client has to send what the
	// matchers need (the ClientHello). Default: 3s.
	MatchingTimeout caddy.Duration `json:"matching_timeout,omitempty"`

	compiled layer4.Handler
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ListenerWrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.passthrough",
		New: func() caddy.Module { return new(ListenerWrapper) },
	}
}

// Provision loads the routes.
func (lw *ListenerWrapper) Provision(ctx caddy.Context) error {
	lw.logger = ctx.Logger()
	if lw.MatchingTimeout <= 0 {
		lw.MatchingTimeout = caddy.Duration(layer4.MatchingTimeoutDefault)
	}
	if err := lw.Routes.Provision(ctx); err != nil {
		return err
	}
	lw.compiled = lw.Routes.Compile(lw.logger, time.Duration(lw.MatchingTimeout), layer4.HandlerFunc(handOn))
	return nil
}

// handOn is the end of the routes: the connection goes to the next
// listener.
func handOn(cx *layer4.Connection) error {
	r, ok := cx.Context.Value(routerCtxKey).(*router)
	if !ok {
		return nil
	}
	select {
	case r.conns <- handedOn{cx}:
		return errHandedOff
	case <-r.done:
		return nil
	}
}

// handedOn is a connection given to the next listener: the bytes the
// matchers read are read first. NetConn exposes the connection beneath for
// code that looks for a wrapper there without reading (proxy_v2's
// placeholders); reading from it directly would skip those bytes.
type handedOn struct{ *layer4.Connection }

// NetConn returns the connection beneath the matching buffer.
func (h handedOn) NetConn() net.Conn { return h.Connection.Conn }

// routerCtxKey finds the router of a connection in its context.
const routerCtxKey caddy.CtxKey = "passthrough.router"

// WrapListener starts routing the connections of ln.
func (lw *ListenerWrapper) WrapListener(ln net.Listener) net.Listener {
	r := &router{Listener: ln, lw: lw, conns: make(chan net.Conn), done: make(chan struct{})}
	go r.loop()
	return r
}

// router accepts from the wrapped listener, routes each connection in its
// own goroutine and returns from Accept the connections handed on.
type router struct {
	net.Listener
	lw        *ListenerWrapper
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	err       error // why Accept ends, set once before done is closed
}

// loop accepts connections until the listener fails or closes.
func (r *router) loop() {
	for {
		conn, err := r.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			r.shutdown(err)
			return
		}
		go r.route(conn)
	}
}

// route runs the layer4 routes on one connection, and closes it unless a
// route handed it on.
func (r *router) route(conn net.Conn) {
	defer func() {
		// a failing handler costs one connection, never the listener
		if v := recover(); v != nil {
			r.lw.logger.Error("panic routing connection", zap.String("remote", conn.RemoteAddr().String()),
				zap.Any("panic", v), zap.Stack("stack"))
			_ = conn.Close()
		}
	}()
	cx := layer4.WrapConnection(conn, make([]byte, 0, 2048), r.lw.logger)
	cx.Context = context.WithValue(cx.Context, routerCtxKey, r)
	err := r.lw.compiled.Handle(cx)
	if errors.Is(err, errHandedOff) {
		return
	}
	if err != nil {
		r.lw.logger.Debug("routing connection", zap.String("remote", conn.RemoteAddr().String()), zap.Error(err))
	}
	_ = conn.Close()
}

// Accept returns the next connection that no route kept.
func (r *router) Accept() (net.Conn, error) {
	select {
	case c := <-r.conns:
		return c, nil
	case <-r.done:
		if r.err != nil && !errors.Is(r.err, net.ErrClosed) {
			return nil, r.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting. Connections being relayed are not touched: they
// end on their own, which is what lets a reload keep them.
func (r *router) Close() error {
	err := r.Listener.Close()
	r.shutdown(net.ErrClosed)
	return err
}

// shutdown ends Accept with err (the first reason only: Close and the
// accept loop's failure race when the listener is closed).
func (r *router) shutdown(err error) {
	r.closeOnce.Do(func() {
		r.err = err
		close(r.done)
	})
}

// Interface guards
var (
	_ caddy.Provisioner     = (*ListenerWrapper)(nil)
	_ caddy.ListenerWrapper = (*ListenerWrapper)(nil)
)
