package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("hide_origin", parseHideOrigin)
	httpcaddyfile.RegisterHandlerDirective("origin_lock", parseOriginLock)
	// hide_origin runs after encode (it sees the origin's body before
	// Caddy compresses it) and before handle/route/reverse_proxy, so that it
	// wraps every proxied response in the site, including those inside
	// handle blocks.
	httpcaddyfile.RegisterDirectiveOrder("hide_origin", httpcaddyfile.After, "encode")
	// origin_lock runs before everything that could answer a request.
	httpcaddyfile.RegisterDirectiveOrder("origin_lock", httpcaddyfile.After, "tracing")
}

func parseHideOrigin(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(hideorigin.Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

func parseOriginLock(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(hideorigin.OriginLock)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}
