package passthrough

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary option blocks to the global
// option's parser: it must return an error or a config that marshals, and
// never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	seeds := []string{
		"passthrough {\n\tapp.example.net 10.0.0.5:443\n}",
		"passthrough {\n\t*.tenant.example.net 10.0.0.6:443 10.0.0.7:443 {\n\t\tlb_policy least_conn\n\t\thealth_interval 10s\n\t\tproxy_protocol v2 authority alpn crc32c\n\t\tidle_timeout 1m\n\t\tname tenants\n\t}\n\tdefault 10.0.0.9:443\n}",
		"passthrough {\n\t~^api-[0-9]+\\.example\\.net$ 10.0.0.8:443\n\tnon_tls pass\n\tmatching_timeout 2s\n}",
		"passthrough {\n\tservers srv0\n\ta.b 1.2.3.4:5 {\n\t\thealth_port 99999\n\t}\n}",
		"passthrough {\n\ta.b 1.2.3.4:5 {\n\t\treject conn_cur gt 1\n\t}\n}",
		"passthrough {\n\ta.b 1.2.3.4:5 {\n\t\ttrack t {l4.tls.server_name} {\n\t\t\treject conn_cur gt 1\n\t\t}\n\t}\n}",
		"passthrough {\n}",
		"passthrough x",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		d := caddyfile.NewDispenser(tokens)
		app := new(App)
		if err := app.UnmarshalCaddyfile(d); err != nil {
			return
		}
		out, err := json.Marshal(app)
		if err != nil {
			t.Fatalf("parsed config does not marshal: %v", err)
		}
		if !strings.Contains(string(out), `"wrapper":"passthrough"`) {
			t.Fatalf("parsed config has no passthrough wrapper: %s", out)
		}
	})
}

func TestUnmarshalOrder(t *testing.T) {
	input := "passthrough {\n\t~^x 10.0.0.1:1\n\t*.b.c 10.0.0.1:2\n\tdefault 10.0.0.1:3\n\t*.a.b.c 10.0.0.1:4\n\tz.b.c 10.0.0.1:5\n}"
	tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
		t.Fatal(err)
	}
	var lw struct {
		Routes []struct {
			Handle []map[string]any `json:"handle"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(app.ListenerWrappersRaw[len(app.ListenerWrappersRaw)-1], &lw); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range lw.Routes {
		h := r.Handle[len(r.Handle)-1]
		if route, ok := h["route"].(string); ok {
			got = append(got, route)
		} else {
			got = append(got, h["handler"].(string))
		}
	}
	want := "z.b.c *.a.b.c *.b.c ~^x default close"
	if strings.Join(got, " ") != want {
		t.Fatalf("route order %q, want %q", strings.Join(got, " "), want)
	}
}
