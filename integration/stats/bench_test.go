package stats_test

import (
	"encoding/json"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// BenchmarkProxiedRequest is one request through an in-process edge to an
// in-process origin, alternately with the stats figures (the admin module
// wraps every reverse_proxy handler) and without them (the same config
// with the admin endpoint off, so nothing is wrapped), four times each in
// ABBA order, and the client straight to the origin (direct: what is not
// the edge's). cpu-ns/op is the process's CPU time per request: client,
// edge and origin.
func BenchmarkProxiedRequest(b *testing.B) {
	o := startOrigin(b, "a")
	e := startEdge(b, "", o)
	adapted := harness.Adapt(b, proxyCaddyfile(e.port, "", o))
	var off map[string]any
	if err := json.Unmarshal(adapted, &off); err != nil {
		b.Fatal(err)
	}
	off["admin"] = map[string]any{"disabled": true}
	off["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"writer": map[string]any{"output": "discard"}}}}
	withoutFigures, _ := json.Marshal(off)
	url := e.url + "/"
	run := func(b *testing.B) {
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
	figures := func() { e.caddy.LoadJSON(adapted); url = e.url + "/"; b.Run("figures", run) }
	without := func() {
		if err := caddy.Load(withoutFigures, true); err != nil {
			b.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // the old servers close
		url = e.url + "/"
		b.Run("without", run)
	}
	direct := func() { url = "http://" + o.addr + "/"; b.Run("direct", run) }
	for i := range 4 { // ABBA order: a drift of the machine's load weighs on both
		if i%2 == 0 {
			figures()
			without()
		} else {
			without()
			figures()
		}
		direct()
	}
	e.caddy.LoadJSON(adapted) // the harness stops a config with its admin endpoint
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
