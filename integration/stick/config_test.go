package stick_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestConfigErrors loads configs that adapt but cannot run: the load fails
// with an error naming the directive and the offending value, and the
// running config stays.
func TestConfigErrors(t *testing.T) {
	port := harness.FreePort(t)
	tables := `	stick_table per_ip {
		type ip
		size 1k
		store http_req_rate(10s) gpc0
	}
	stick_table names {
		type string
		size 1k
		store conn_cur
	}`
	site := func(global, body string) string {
		parts := []string{"{\n\tauto_https off\n" + tables}
		if global != "" {
			parts = append(parts, global)
		}
		parts = append(parts, fmt.Sprintf("}\n\n:%d {", port))
		if body != "" {
			parts = append(parts, body)
		}
		return strings.Join(append(parts, "\trespond ok\n}\n"), "\n")
	}
	c := harness.RunCaddyfile(t, site("", "\ttrack per_ip {client_ip}"))
	for _, bad := range []struct {
		global, body string
		want         []string
	}{
		{"", "\ttrack nope {client_ip}", []string{"track", `no stick table named "nope"`, "per_ip"}},
		{"", "\t@x stick per_ip conn_cur gt 1\n\trespond @x 429", []string{"stick matcher", "per_ip", `does not store "conn_cur"`}},
		{"", "\tstick_ban per_ip 1m", []string{"stick_ban per_ip", "does not store ban"}},
		{"", "\tstick_inc per_ip gpc3", []string{"stick_inc per_ip", `"gpc3"`, "gpc0"}},
		{"\tservers :" + fmt.Sprint(port) + " {\n\t\tlistener_wrappers {\n\t\t\tstick names\n\t\t}\n\t}", "", []string{"stick listener wrapper", "names", "string keys"}},
		{"", "\treverse_proxy 127.0.0.1:1 {\n\t\tlb_policy stick per_ip\n\t}", []string{"lb_policy stick per_ip", "server_id"}},
	} {
		err := c.TryLoadJSON(harness.Adapt(t, site(bad.global, bad.body)))
		if err == nil {
			t.Errorf("config with %q%q loaded", bad.global, bad.body)
			continue
		}
		for _, w := range bad.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not name %q", err, w)
			}
		}
	}
	if status, _, body := get(t, client(), fmt.Sprintf("http://127.0.0.1:%d/", port)); status != 200 || body != "ok" {
		t.Errorf("running config lost after failed loads: %d %q", status, body)
	}
}

// TestJSONConfigChecks loads JSON configs (no Caddyfile parser involved)
// that break the rules of a table or handler: each is refused at load with
// the same message the Caddyfile gives.
func TestJSONConfigChecks(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf("{\n\tauto_https off\n}\n:%d {\n\trespond ok\n}\n", port))
	config := func(tableJSON, handlerJSON string) []byte {
		return []byte(fmt.Sprintf(`{"apps": {
			"stick_tables": {"tables": {"t": %s}},
			"http": {"servers": {"s": {"listen": [":%d"], "routes": [{"handle": [%s]}]}}}
		}}`, tableJSON, port, handlerJSON))
	}
	const okTable = `{"type": "ip", "size": 100, "store": ["ban", "http_req_rate(10s)"]}`
	const okHandler = `{"handler": "static_response", "body": "ok"}`
	for _, bad := range []struct{ table, handler, want string }{
		{`{"type": "ip"}`, okHandler, "stick_table t: missing size"},
		{`{"type": "ip", "size": 4294967296}`, okHandler, "stick_table t: size 4294967296 is more than the largest table"},
		{`{"type": "ip", "size": 10, "len": 4}`, okHandler, "stick_table t: len applies to string and binary keys, not ip"},
		{`{"type": "ip", "size": 10, "store": ["http_req_rate(10)"]}`, okHandler, `period "10": time: missing unit`},
		{`{"type": "string", "size": 10, "ipv6_prefix": 64}`, okHandler, "stick_table t: ipv4_prefix and ipv6_prefix need an ip or ipv6 table"},
		{okTable, `{"handler": "tarpit", "delay": 1000000, "status_code": 200}`, "tarpit: status 200 is not a 4xx or 5xx code"},
		{okTable, `{"handler": "stick_ban", "table": "t", "duration": 0}`, "stick_ban t: duration 0s must be positive"},
	} {
		err := c.TryLoadJSON(config(bad.table, bad.handler))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("table %s handler %s: load error %v, want one containing %q", bad.table, bad.handler, err, bad.want)
		}
	}
	if err := c.TryLoadJSON(config(okTable, okHandler)); err != nil {
		t.Fatalf("the good config does not load: %v", err)
	}
}
