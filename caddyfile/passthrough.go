package caddyfile

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/rampart-edge/caddy-rampart/modules/passthrough"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("passthrough", parsePassthrough)
}

// parsePassthrough turns the `passthrough` global option into the
// passthrough app, which puts the SNI routes in front of the HTTPS servers.
func parsePassthrough(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("passthrough: the global option may be given only once")
	}
	app := new(passthrough.App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(app)
	if err != nil {
		return nil, d.Errf("passthrough: %v", err)
	}
	return httpcaddyfile.App{Name: "passthrough", Value: raw}, nil
}
