package hideorigin

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalHideOrigin(t *testing.T) {
	d := caddyfile.NewTestDispenser(`hide_origin 10.0.0.10:8080 {
		origin origin.internal [fd00::1]:80
		public https://{host}
		strip X-Debug-Token
		keep X-Served-By
		body text/html application/json
		errors passthrough
		sign {env.KEY}
		no_auto_upstreams
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{Origins: []string{"10.0.0.10:8080", "origin.internal", "[fd00::1]:80"}, Public: "https://{host}",
		Strip: []string{"X-Debug-Token"}, Keep: []string{"X-Served-By"}, Body: []string{"text/html", "application/json"},
		Errors: "passthrough", Sign: "{env.KEY}", NoAutoUpstreams: true}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got %+v\nwant %+v", h, want)
	}
}

func TestUnmarshalOriginLock(t *testing.T) {
	d := caddyfile.NewTestDispenser(`origin_lock {
		key {env.NEW} {env.OLD}
		max_skew 10s
		allow 10.0.0.0/8 192.0.2.1
		deny close
		replay_cache 1000
	}`)
	var l OriginLock
	if err := l.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if len(l.Keys) != 2 || time.Duration(l.MaxSkew) != 10*time.Second || len(l.Allow) != 2 || l.Deny != "close" || l.ReplayCache != 1000 {
		t.Fatalf("got %+v", l)
	}
}

func TestUpstreamDiscoveryHelpers(t *testing.T) {
	raw := `{"handler":"subroute","routes":[{"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.1:80"},{"dial":"unix//run/app.sock"},{"dial":"{env.UP}:80"}]}]},
		{"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"tcp/[fd00::2]:8080"}]}]}]}`
	var got []string
	for _, d := range routeUpstreamsFromJSON(t, raw) {
		if id, ok := dialIdentity(d); ok {
			got = append(got, id)
		}
	}
	if strings.Join(got, " ") != "10.0.0.1:80 [fd00::2]:8080" {
		t.Fatalf("upstreams: %q", got)
	}
}

func FuzzUnmarshalCaddyfile(f *testing.F) {
	f.Add("hide_origin a.b {\n origin 1.2.3.4:5\n body off\n}")
	f.Add("origin_lock k0123456789abcdef {\n allow 10.0.0.0/8\n max_skew 5s\n}")
	f.Add("hide_origin {\n public https://x\n sign 0123456789abcdef\n errors generic\n}")
	f.Fuzz(func(t *testing.T, input string) {
		d := caddyfile.NewTestDispenser(input)
		if strings.HasPrefix(input, "origin_lock") {
			var l OriginLock
			_ = l.UnmarshalCaddyfile(d)
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(d)
	})
}

func routeUpstreamsFromJSON(t *testing.T, raw string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatal(err)
	}
	return jsonUpstreams(v)
}

func TestProvisionKeysFromEnvironment(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t.Setenv("HO_TEST_KEY", "a-key-from-the-environment")
	h := &Handler{Sign: "{env.HO_TEST_KEY}"}
	if err := h.Provision(ctx); err != nil || h.key == nil {
		t.Fatalf("sign from env: %v", err)
	}
	l := &OriginLock{Keys: []string{"{env.HO_TEST_KEY}"}}
	if err := l.Provision(ctx); err != nil {
		t.Fatalf("origin_lock key from env: %v", err)
	}
	defer l.Cleanup()
	h2 := &Handler{Sign: "{env.HO_TEST_UNSET_KEY}"}
	if err := h2.Provision(ctx); err == nil || !strings.Contains(err.Error(), "{env.HO_TEST_UNSET_KEY}") {
		t.Fatalf("unset env key: %v", err)
	}
	l2 := &OriginLock{Keys: []string{"short"}}
	if err := l2.Provision(ctx); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("a short literal key must fail without printing it: %v", err)
	}
}
