package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2"
)

// The proxy_v2 listener wrapper, layer4 handler and reverse_proxy transport
// are unmarshaled by their own modules (listener_wrappers, layer4 routes
// and `transport proxy_v2` find them by module ID); only the handler that
// publishes placeholders is a directive.
func init() {
	httpcaddyfile.RegisterHandlerDirective("proxy_v2_vars", parseProxyV2Vars)
	// First of all handlers, so that every later handler and the access
	// log can use {http.request.proxy.*}.
	httpcaddyfile.RegisterDirectiveOrder("proxy_v2_vars", httpcaddyfile.Before, "tracing")
}

// parseProxyV2Vars sets up the proxy_v2_vars handler from its Caddyfile
// tokens.
func parseProxyV2Vars(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler proxyv2.VarsHandler
	return handler, handler.UnmarshalCaddyfile(h.Dispenser)
}
