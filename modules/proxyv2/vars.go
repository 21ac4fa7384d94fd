package proxyv2

import (
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

func init() {
	caddy.RegisterModule(VarsHandler{})
}

// VarsHandler publishes the PROXY header of the request's connection as
// {http.request.proxy.*} placeholders for every later handler and the
// access log, and adds the load balancer's socket address to the access
// log as proxy_peer. Caddy gives a listener wrapper no way to add
// placeholders or access-log fields to requests by itself, hence this
// one-word directive: proxy_v2_vars.
type VarsHandler struct{}

// CaddyModule returns the Caddy module information.
func (VarsHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.proxy_v2_vars",
		New: func() caddy.Module { return new(VarsHandler) },
	}
}

// ServeHTTP adds the placeholders and the access-log field, and calls the
// next handler.
func (VarsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var h *wire.Header
	var peer net.Addr
	if c, ok := r.Context().Value(connCtxKey{}).(*Conn); ok {
		h, peer = c.Header(), c.Peer()
		if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
			extra.Set(zap.Stringer(accessLogPeerField, peer))
		}
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(replacerFunc(h, peer, HTTPPlaceholderPrefix))
	}
	return next.ServeHTTP(w, r)
}

// accessLogPeerField is the access-log field of the load balancer's
// socket address.
const accessLogPeerField = "proxy_peer"

// UnmarshalCaddyfile accepts the bare directive `proxy_v2_vars`.
func (*VarsHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.Errf("proxy_v2_vars: takes no arguments, got %q", d.Val())
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("proxy_v2_vars: takes no block")
	}
	return nil
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*VarsHandler)(nil)
	_ caddyfile.Unmarshaler       = (*VarsHandler)(nil)
)
