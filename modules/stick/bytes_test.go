package stick

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// TestTrackCountsBytesOutsideTheWriter reports bytes through the counter
// track leaves in the rampart.count_bytes request variable (what
// forward_proxy does for a tunnel that took over the connection), from two
// goroutines at once: every entry tracked in the request counts them while
// the request runs, and once more nothing when it ends (no double count
// with the body and writer, which carried none of them).
func TestTrackCountsBytesOutsideTheWriter(t *testing.T) {
	lt := testTable(t, "bytes_in_cnt", "bytes_out_cnt", "req_cur")
	outer := &Track{Table: "t", Key: "{http.vars.client_ip}", tbl: lt.tbl, logger: zap.NewNop()}
	inner := &Track{Table: "t", Key: "192.0.2.2", tbl: lt.tbl, logger: zap.NewNop()}
	values := func(key string) map[string]uint64 {
		k, _ := lt.schema.KeyFrom(key)
		e, _ := lt.tbl.Snapshot(k)
		got := map[string]uint64{}
		for i, c := range lt.schema.Columns() {
			got[c.Name] = e.Values[i]
		}
		return got
	}
	tunnel := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		bc, ok := caddyhttp.GetVar(r.Context(), "rampart.count_bytes").(interface{ CountBytes(in, out uint64) })
		if !ok {
			t.Fatal("no byte counter in the request variable rampart.count_bytes")
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for range 100 {
					bc.CountBytes(3, 0)
					bc.CountBytes(0, 5)
				}
			})
		}
		wg.Wait()
		for _, key := range []string{"192.0.2.1", "192.0.2.2"} {
			if v := values(key); v["bytes_in_cnt"] != 600 || v["bytes_out_cnt"] != 1000 || v["req_cur"] != 1 {
				t.Errorf("%s while the request runs: %v, want 600 in, 1000 out, req_cur 1", key, v)
			}
		}
		return nil
	})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return inner.ServeHTTP(w, r, tunnel)
	})
	if err := outer.ServeHTTP(httptest.NewRecorder(), request("192.0.2.1"), next); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"192.0.2.1", "192.0.2.2"} {
		if v := values(key); v["bytes_in_cnt"] != 600 || v["bytes_out_cnt"] != 1000 || v["req_cur"] != 0 {
			t.Errorf("%s after the request: %v, want 600 in, 1000 out, req_cur 0", key, v)
		}
	}
}
