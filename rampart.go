// Package rampart brings the whole Rampart suite into a Caddy build:
// `xcaddy build --with github.com/rampart-edge/caddy-rampart` imports this
// package, which registers every module and Caddyfile directive.
package rampart

import (
	_ "github.com/rampart-edge/caddy-rampart/caddyfile"
	_ "github.com/rampart-edge/caddy-rampart/modules/forwardproxy"
	_ "github.com/rampart-edge/caddy-rampart/modules/hideorigin"
	_ "github.com/rampart-edge/caddy-rampart/modules/passthrough"
	_ "github.com/rampart-edge/caddy-rampart/modules/proxyv2"
	_ "github.com/rampart-edge/caddy-rampart/modules/stick"
)
