package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy"
)

// forward_proxy runs right after header: after track and the stick_*
// actions and tarpit (which run before header), so that a tunnel counts in
// the tables while it is open and their limits apply to proxy requests; and
// before everything that rewrites or answers requests (redir, rewrite,
// basic_auth, handle, respond, reverse_proxy, file_server), which then only
// see the requests the proxy passed on (origin-form).
func init() {
	httpcaddyfile.RegisterHandlerDirective("forward_proxy", parseForwardProxy)
	httpcaddyfile.RegisterDirectiveOrder("forward_proxy", httpcaddyfile.After, "header")
}

func parseForwardProxy(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(forwardproxy.ForwardProxy)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, m.FinalizeUnmarshalCaddyfile(h)
}
