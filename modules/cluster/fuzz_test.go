package cluster_test

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rampart-edge/caddy-rampart/modules/cluster"
)

// FuzzStickClusterCaddyfile: the stick_cluster block parser never panics,
// and whatever it accepts passes Validate.
func FuzzStickClusterCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"stick_cluster {\n redis redis://127.0.0.1:6379/0\n node e1\n sync 100ms\n timeout 50ms\n on_outage deny\n}",
		"stick_cluster {\n redis sentinel m redis://127.0.0.1:26379\n}",
		"stick_cluster {\n redis cluster redis://127.0.0.1:7000\n}",
		"stick_cluster {\n redis rediss://u:p@h:1/2\n sync 0\n}",
		"stick_cluster x",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var a cluster.App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("accepted %q but Validate says %v", input, err)
		}
	})
}
