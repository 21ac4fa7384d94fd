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
// in Provision, so the JSON config fails with one message naming the
// directive and the value; hide_origin's Caddyfile runs the same checks
// after each option, so the Caddyfile fails at the user's own line.
func TestConfigErrors(t *testing.T) {
	for name, c := range map[string]struct {
		site, handler, want string
		atLine              bool // the Caddyfile reports the option's line
	}{
		"bad errors":  {"hide_origin {\n\t\terrors verbose\n\t}", `{"handler":"hide_origin","errors":"verbose"}`, `hide_origin: errors "verbose" is not generic or passthrough`, true},
		"bad port":    {"hide_origin {\n\t\torigin 10.0.0.10:99999\n\t}", `{"handler":"hide_origin","origins":["10.0.0.10:99999"]}`, `hide_origin: origin: origin identity "10.0.0.10:99999": invalid port "99999"`, true},
		"bad public":  {"hide_origin {\n\t\tpublic ftp://example.com\n\t}", `{"handler":"hide_origin","public":"ftp://example.com"}`, `hide_origin: public "ftp://example.com": scheme must be http or https`, true},
		"bad strip":   {"hide_origin {\n\t\tstrip \"Bad Header\"\n\t}", `{"handler":"hide_origin","strip":["Bad Header"]}`, `hide_origin: strip/keep: invalid header name "Bad Header"`, true},
		"bad body":    {"hide_origin {\n\t\tbody text/html html\n\t}", `{"handler":"hide_origin","body":["text/html","html"]}`, `hide_origin: body: "html" is not a media type, type/* or */*+suffix`, true},
		"short key":   {"hide_origin {\n\t\tsign short\n\t}", `{"handler":"hide_origin","sign":"short"}`, `hide_origin: sign: key is 5 bytes long, at least 16 are required`, true},
		"bad allow":   {"origin_lock 0123456789abcdef0123 {\n\t\tallow 10.0.0.0/33\n\t}", `{"handler":"origin_lock","keys":["0123456789abcdef0123"],"allow":["10.0.0.0/33"]}`, `origin_lock: allow: "10.0.0.0/33" is not an IP address or CIDR range`, true},
		"bad deny":    {"origin_lock 0123456789abcdef0123 {\n\t\tdeny silently\n\t}", `{"handler":"origin_lock","keys":["0123456789abcdef0123"],"deny":"silently"}`, `origin_lock: deny "silently" is not 403 or close`, true},
		"no key":      {"origin_lock {\n\t\tmax_skew 30s\n\t}", `{"handler":"origin_lock","max_skew":30000000000}`, `origin_lock: at least one key is required`, false},
		"bad skew":    {"origin_lock 0123456789abcdef0123 {\n\t\tmax_skew -5s\n\t}", `{"handler":"origin_lock","keys":["0123456789abcdef0123"],"max_skew":-5000000000}`, `origin_lock: max_skew -5s is negative`, true},
		"bad replays": {"origin_lock 0123456789abcdef0123 {\n\t\treplay_cache -1\n\t}", `{"handler":"origin_lock","keys":["0123456789abcdef0123"],"replay_cache":-1}`, `origin_lock: replay_cache -1 is negative`, true},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte("{\n\tadmin off\n}\nhttp://127.0.0.1:1 {\n\t"+c.site+"\n}\n"), nil)
			if c.atLine {
				if err == nil || !strings.Contains(err.Error(), c.want+", at Caddyfile:6") {
					t.Fatalf("adapting: %v\nwant an error containing %q at Caddyfile:6", err, c.want)
				}
			} else {
				if err != nil {
					t.Fatalf("adapting: %v", err)
				}
				validateOnce(t, cfg, c.want)
			}
			json := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:1"],"routes":[{"handle":[` + c.handler + `]}]}}}}}`
			validateOnce(t, []byte(json), c.want)
		})
	}
}

// validateOnce checks that a JSON config fails validation with want, said once.
func validateOnce(t *testing.T, cfg []byte, want string) {
	t.Helper()
	var config caddy.Config
	if err := json.Unmarshal(cfg, &config); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(&config)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("validating %s: %v\nwant an error containing %q", cfg, err, want)
	}
	if strings.Count(err.Error(), want) != 1 {
		t.Errorf("the message is given more than once: %v", err)
	}
}
