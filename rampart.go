// Package rampart brings the whole Rampart suite into a Caddy build:
// `xcaddy build --with github.com/rampart-edge/caddy-rampart` imports this
// package, which registers every module and Caddyfile directive, and every
// module of other projects that the suite's configurations use, so that no
// other `--with` is needed.
package rampart

import (
	// caddy-l4's app, matchers and handlers: the passthrough option
	// generates layer4 routes (layer4.matchers.tls, layer4.matchers.not,
	// ...), and proxy_v2 and stick have layer4 handlers for the layer4 app.
	_ "github.com/mholt/caddy-l4"

	_ "github.com/rampart-edge/caddy-rampart/caddyfile" // with cache-handler's `cache`
	_ "github.com/rampart-edge/caddy-rampart/modules/cache"
	_ "github.com/rampart-edge/caddy-rampart/modules/cluster"
	_ "github.com/rampart-edge/caddy-rampart/modules/forwardproxy"
	_ "github.com/rampart-edge/caddy-rampart/modules/hideorigin"
	_ "github.com/rampart-edge/caddy-rampart/modules/passthrough"
	_ "github.com/rampart-edge/caddy-rampart/modules/proxyv2"
	_ "github.com/rampart-edge/caddy-rampart/modules/stick"
)
