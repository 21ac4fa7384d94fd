package caddyfile

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/rampart-edge/caddy-rampart/modules/cluster"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("stick_cluster", parseStickCluster)
}

// parseStickCluster turns the `stick_cluster` global option into the
// stick_cluster app: the Redis that the edges share.
func parseStickCluster(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("stick_cluster: the global option may be given only once")
	}
	app := new(cluster.App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(app)
	if err != nil {
		return nil, d.Errf("stick_cluster: %v", err)
	}
	return httpcaddyfile.App{Name: "stick_cluster", Value: raw}, nil
}
