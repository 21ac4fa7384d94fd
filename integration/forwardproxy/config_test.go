package forwardproxy_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestJSONConfigErrors loads JSON configs with bad values: the checks live
// in Provision and Validate, so JSON users get the same messages as the
// Caddyfile's.
func TestJSONConfigErrors(t *testing.T) {
	e := newEnv(t)
	c := e.start(baseConfig)
	for handler, want := range map[string]string{
		`{"handler": "forward_proxy", "allow_source": ["10.0.0.0/33"]}`:                 `forward_proxy: allow_source: "10.0.0.0/33" is not an IP address or CIDR range`,
		`{"handler": "forward_proxy", "deny_destination": ["bad..name"]}`:               `forward_proxy: deny_destination: invalid destination host: "bad..name"`,
		`{"handler": "forward_proxy", "allow_destination": ["10.0.0.0/40"]}`:            `forward_proxy: allow_destination: "10.0.0.0/40"`,
		`{"handler": "forward_proxy", "private_destinations": "sometimes"}`:             `forward_proxy: private_destinations "sometimes" is not deny or allow`,
		`{"handler": "forward_proxy", "connect_ports": [0]}`:                            `forward_proxy: connect_ports: port 0 is not a port`,
		`{"handler": "forward_proxy", "idle_timeout": -1}`:                              `forward_proxy: idle_timeout -1ns must not be negative`,
		`{"handler": "forward_proxy", "pac": "proxy.pac"}`:                              `forward_proxy: pac "proxy.pac" must be a path starting with /`,
		`{"handler": "forward_proxy", "resolvers": ["unix//tmp/dns"]}`:                  `forward_proxy: resolvers: "unix//tmp/dns" is not one host:port`,
		`{"handler": "forward_proxy", "block_list": "/nonexistent/list"}`:               `forward_proxy: block_list: open /nonexistent/list`,
		`{"handler": "forward_proxy", "basic_auth": {"accounts": [{"username": "a"}]}}`: `forward_proxy: basic_auth: account 0: username and password are required`,
	} {
		config := fmt.Sprintf(`{"apps": {"http": {"servers": {"p": {"listen": ["127.0.0.1:%s"], "routes": [{"handle": [%s]}]}}}}}`, portOf(e.sources), handler)
		err := c.TryLoadJSON([]byte(config))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", handler, err, want)
		}
	}
}

// TestReloadKeepsTunnels reloads the config while a tunnel is open: the
// tunnel keeps working, new requests follow the new config.
func TestReloadKeepsTunnels(t *testing.T) {
	e := newEnv(t)
	c := e.start(baseConfig)
	tunnel := e.connect(fmt.Sprintf("allowed.test:%d", e.echo.port()))
	c.Reload(e.expand(strings.Replace(baseConfig, "allow_destination ${ALLOWED}/32", "allow_destination ${ALLOWED}/32\n\t\tdeny_destination allowed.test", 1)))
	if _, err := io.WriteString(tunnel, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = tunnel.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(tunnel, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("tunnel after the reload: %q %v", buf, err)
	}
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("CONNECT allowed.test:%d HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", e.echo.port(), basic(user, password)))
	if body := readBody(t, resp); resp.StatusCode != 403 || !strings.Contains(body, "deny_destination") {
		t.Errorf("new tunnel after the reload: %s %q", resp.Status, body)
	}
}
