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
