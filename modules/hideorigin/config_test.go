package hideorigin_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rampart-edge/caddy-rampart/caddyfile"
)

// TestConfigErrors: every value check of hide_origin and origin_lock lives
// in Provision, so a Caddyfile and the JSON it adapts to fail alike, with
// one message naming the directive and the value.
func TestConfigErrors(t *testing.T) {
	for name, c := range map[string]struct{ site, want string }{
		"bad errors":  {"hide_origin {\n\t\terrors verbose\n\t}", `hide_origin: errors "verbose" is not generic or passthrough`},
		"bad port":    {"hide_origin {\n\t\torigin 10.0.0.10:99999\n\t}", `hide_origin: origin: origin identity "10.0.0.10:99999": invalid port "99999"`},
		"bad public":  {"hide_origin {\n\t\tpublic ftp://example.com\n\t}", `hide_origin: public "ftp://example.com": scheme must be http or https`},
		"bad strip":   {"hide_origin {\n\t\tstrip \"Bad Header\"\n\t}", `hide_origin: strip/keep: invalid header name "Bad Header"`},
		"bad body":    {"hide_origin {\n\t\tbody text/html html\n\t}", `hide_origin: body: "html" is not a media type, type/* or */*+suffix`},
		"short key":   {"hide_origin {\n\t\tsign short\n\t}", `hide_origin: sign: key is 5 bytes long, at least 16 are required`},
		"bad allow":   {"origin_lock 0123456789abcdef0123 {\n\t\tallow 10.0.0.0/33\n\t}", `origin_lock: allow: "10.0.0.0/33" is not an IP address or CIDR range`},
		"bad deny":    {"origin_lock 0123456789abcdef0123 {\n\t\tdeny silently\n\t}", `origin_lock: deny "silently" is not 403 or close`},
		"no key":      {"origin_lock {\n\t\tmax_skew 30s\n\t}", `origin_lock: at least one key is required`},
		"bad skew":    {"origin_lock 0123456789abcdef0123 {\n\t\tmax_skew -5s\n\t}", `origin_lock: max_skew -5s is negative`},
		"bad replays": {"origin_lock 0123456789abcdef0123 {\n\t\treplay_cache -1\n\t}", `origin_lock: replay_cache -1 is negative`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte("{\n\tadmin off\n}\nhttp://127.0.0.1:1 {\n\t"+c.site+"\n}\n"), nil)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			var config caddy.Config
			if err := json.Unmarshal(cfg, &config); err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(&config)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("validating the adapted JSON: %v\nwant an error containing %q", err, c.want)
			}
			if strings.Count(err.Error(), c.want) != 1 {
				t.Errorf("the message is given more than once: %v", err)
			}
		})
	}
}
