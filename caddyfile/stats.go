package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/stats"
)

// rampart_stats answers its requests itself: it runs right before respond,
// after basic_auth (which protects it on a public edge) and the stick
// actions (which limit it).
func init() {
	httpcaddyfile.RegisterHandlerDirective("rampart_stats", parseRampartStats)
	httpcaddyfile.RegisterDirectiveOrder("rampart_stats", httpcaddyfile.Before, "respond")
}

func parseRampartStats(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(stats.Handler)
	return m, m.UnmarshalCaddyfile(h.Dispenser)
}
