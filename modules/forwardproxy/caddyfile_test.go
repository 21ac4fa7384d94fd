package forwardproxy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	fp := new(ForwardProxy)
	d := caddyfile.NewTestDispenser(`forward_proxy {
		allow_source 10.0.0.0/8 192.0.2.1
		allow_destination example.com *.example.org 203.0.113.0/24 [2001:db8::1]
		deny_destination ads.example.net
		connect_ports 443 8443
		http_ports 80
		private_destinations allow
		hide_client off
		pac /proxy.pac
		dial_timeout 3s
		idle_timeout 1m
		block_list_interval 2s
		resolvers 127.0.0.1:5353
		max_header_size 16KiB
		basic_auth argon2id corp {
			bob $argon2id$v=19$m=47104,t=1,p=1$c2FsdHNhbHQ$aGFzaA
		}
	}`)
	if err := fp.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if len(fp.AllowSource) != 2 || len(fp.AllowDestination) != 4 || fp.ConnectPorts[1] != 8443 ||
		fp.PrivateDestinations != "allow" || fp.HideClient == nil || *fp.HideClient || fp.MaxHeaderSize != 16<<10 ||
		fp.BasicAuth.Realm != "corp" || fp.BasicAuth.AccountList[0].Username != "bob" {
		t.Errorf("parsed %+v", fp)
	}
	if _, _, err := parseDestinations("allow_destination", fp.AllowDestination); err != nil {
		t.Errorf("a parsed destination list does not parse again: %v", err)
	}
}

// FuzzUnmarshalCaddyfile feeds arbitrary option lines to the unmarshaler:
// it must return an error or a handler whose JSON round-trips, never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range []string{
		"allow_source 10.0.0.0/8",
		"allow_destination example.com *.example.org 203.0.113.0/24",
		"connect_ports 443 70000",
		"basic_auth {\n alice $2a$04$x\n}",
		"hide_client maybe",
		"limits {\n track per_user {http.auth.user.id}\n}",
		"max_header_size 1MiB",
		"resolvers [::1]:53 127.0.0.1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		if strings.Contains(body, "}") && strings.Count(body, "{") != strings.Count(body, "}") {
			return // unbalanced braces are the Caddyfile lexer's business
		}
		fp := new(ForwardProxy)
		if err := fp.UnmarshalCaddyfile(caddyfile.NewTestDispenser("forward_proxy {\n" + body + "\n}")); err != nil {
			return
		}
		out, err := json.Marshal(fp)
		if err != nil {
			t.Fatalf("accepted %q but cannot marshal: %v", body, err)
		}
		var back ForwardProxy
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("JSON %s does not unmarshal: %v", out, err)
		}
		if _, _, err := parseDestinations("allow_destination", fp.AllowDestination); err != nil {
			t.Fatalf("accepted allow_destination that Provision refuses: %v", err)
		}
		if _, err := parseSources(fp.AllowSource); err != nil {
			t.Fatalf("accepted allow_source that Provision refuses: %v", err)
		}
	})
}
