// Command caddy is the Caddy binary with the standard modules and the whole
// Rampart suite: the main that `xcaddy build --with
// github.com/rampart-edge/caddy-rampart` generates.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/rampart-edge/caddy-rampart"
)

func main() {
	caddycmd.Main()
}
