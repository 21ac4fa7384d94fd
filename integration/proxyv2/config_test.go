package proxyv2_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestJSONConfigsGetEveryCheck loads JSON configs, which never pass through
// a Caddyfile unmarshaler: every proxy_v2 rule must still refuse them, with
// the same message the Caddyfile gives.
func TestJSONConfigsGetEveryCheck(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf("http://127.0.0.1:%d {\n\trespond ok\n}\n", port))
	listener := func(policy string) string {
		return fmt.Sprintf(`{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:%d"],
			"listener_wrappers":[{"wrapper":"proxy_v2",%s}],"routes":[{"handle":[{"handler":"static_response","body":"ok"}]}]}}}}}`, port, policy)
	}
	layer4 := func(policy string) string {
		return fmt.Sprintf(`{"apps":{"layer4":{"servers":{"s":{"listen":["127.0.0.1:%d"],
			"routes":[{"handle":[{"handler":"proxy_v2",%s}]}]}}}}}`, port, policy)
	}
	transport := func(options string) string {
		return fmt.Sprintf(`{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:%d"],
			"routes":[{"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:9"}],
			"transport":{"protocol":"proxy_v2",%s}}]}]}}}}}`, port, options)
	}
	for _, tc := range []struct{ name, config, want string }{
		{"max_header above the v2 maximum", listener(`"trust":["127.0.0.1"],"max_header":70000`), "proxy_v2: max_header 70000: must be from 107 to 65551 bytes"},
		{"max_header below the v1 maximum", listener(`"trust":["127.0.0.1"],"max_header":50`), "proxy_v2: max_header 50: must be from 107 to 65551 bytes"},
		{"layer4 max_header", layer4(`"trust":["127.0.0.1"],"max_header":70000`), "proxy_v2: max_header 70000: must be from 107 to 65551 bytes"},
		{"negative timeout", listener(`"trust":["127.0.0.1"],"timeout":"-1s"`), "proxy_v2: timeout -1s: must be positive"},
		{"bad trust", listener(`"trust":["10.0.0.0/33"]`), `proxy_v2: trust: "10.0.0.0/33" is not an IP address or CIDR range`},
		{"bad untrusted", listener(`"trust":["127.0.0.1"],"untrusted":"allow"`), `proxy_v2: untrusted "allow": must be "reject" or "plain"`},
		{"bad version", listener(`"trust":["127.0.0.1"],"versions":[3]`), "proxy_v2: versions: v3 is not a PROXY protocol version (v1 or v2)"},
		{"no trust", layer4(`"untrusted":"reject"`), "proxy_v2: no trust ranges and untrusted \"reject\""},
		{"transport max_pools", transport(`"max_pools":-1`), "proxy_v2 transport: max_pools -1: must be positive"},
		{"transport pool_idle_timeout", transport(`"pool_idle_timeout":"-1s"`), "proxy_v2 transport: pool_idle_timeout -1s: must be positive"},
		{"transport tlv", transport(`"tlvs":[{"type":"crc32c","value":"x"}]`), `proxy_v2 transport: tlv type "crc32c": crc32c and ssl have their own options`},
		{"transport proxy_protocol", transport(`"proxy_protocol":"v2"`), `proxy_v2 transport: proxy_protocol "v2": the proxy_v2 transport writes the header itself`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.TryLoadJSON([]byte(tc.config))
			if err == nil {
				t.Fatalf("config loaded; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

// TestTrustRangesWithHostBitsAreMasked: a trust range is parsed as Caddy's
// remote_ip parses one, host bits allowed and masked, the same rule as
// origin_lock's and every other range in the suite.
func TestTrustRangesWithHostBitsAreMasked(t *testing.T) {
	_, addr, _ := startListener(t, "trust 127.0.0.5/8\nuntrusted reject")
	_, body, err := request(dialFrom(t, "127.0.0.1", addr), v2Header(t, "203.0.113.9:1000", "198.51.100.1:443", false), "x")
	if err != nil {
		t.Fatal(err)
	}
	if f := fields(body); f["remote"] != "203.0.113.9" {
		t.Errorf("127.0.0.5/8 does not trust 127.0.0.1: %q", body)
	}
}
