package table

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable millisecond clock.
type fakeClock struct{ ms atomic.Int64 }

func (c *fakeClock) now() int64              { return c.ms.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

func mustSchema(t testing.TB, typ string, store ...string) *Schema {
	t.Helper()
	kt, err := ParseKeyType(typ)
	if err != nil {
		t.Fatal(err)
	}
	s := &Schema{Type: kt}
	for _, spec := range store {
		if s.Fields, err = ParseStore(s.Fields, spec, time.ParseDuration); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	return s
}

func newTable(t testing.TB, s *Schema, size int, expire time.Duration) (*Table, *fakeClock) {
	t.Helper()
	clk := &fakeClock{}
	clk.ms.Store(1_000_000_000) // an arbitrary start, aligned to every period used
	tb, err := New(s, Options{Size: size, Expire: expire, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return tb, clk
}

func col(t testing.TB, tb *Table, name string) Column {
	t.Helper()
	c, err := tb.Schema().Column(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func key(t testing.TB, tb *Table, v string) Key {
	t.Helper()
	k, err := tb.Schema().KeyFrom(v)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func get(t testing.TB, tb *Table, k Key, name string) uint64 {
	t.Helper()
	v, ok := tb.Lookup(k, col(t, tb, name))
	if !ok {
		t.Fatalf("no entry for %s", tb.Schema().FormatKey(k))
	}
	return v
}

func TestParseStore(t *testing.T) {
	s := mustSchema(t, "ip", "http_req_rate(10s)", "http_err_rate(10s)", "http_fail_rate(1m)", "req_cur",
		"conn_cur", "conn_rate(3s)", "bytes_in_rate(1m)", "bytes_out_rate(1m)", "gpc(2)", "gpc_rate(1,1m)",
		"gpt(1)", "http_req_cnt", "conn_cnt", "bytes_out_cnt", "server_id", "ban")
	want := "type ip store http_req_rate(10s) http_err_rate(10s) http_fail_rate(1m) req_cur conn_cur conn_rate(3s) bytes_in_rate(1m) bytes_out_rate(1m) gpc(2) gpc_rate(1,1m) gpt(1) http_req_cnt conn_cnt bytes_out_cnt server_id ban"
	if got := s.String(); got != want {
		t.Errorf("schema\n got %s\nwant %s", got, want)
	}
	var names []string
	for _, c := range s.Columns() {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "gpc0 gpc1 gpc0_rate gpt0") {
		t.Errorf("columns: %s", got)
	}
	// 3+3+3+1+1+3+5+5+2+3+1+1+1+2+1+2 words
	if s.Words() != 37 {
		t.Errorf("words per entry: %d, want 37", s.Words())
	}

	legacy := mustSchema(t, "string", "gpc0,gpc1", "gpt0", "gpc1_rate(10s)")
	if got := legacy.String(); got != "type string len 32 store gpc(2) gpt(1) gpc_rate(2,10s)" {
		t.Errorf("legacy names: %s", got)
	}

	for _, bad := range []struct{ spec, msg string }{
		{"http_req_rate", "needs a period"},
		{"http_req_rate(x)", "invalid duration"},
		{"http_req_rate(10)", `period "10": time: missing unit`},
		{"http_req_rate(0s)", "must be positive"},
		{"gpc", "needs an element count"},
		{"gpc(0)", "not a number in 1..100"},
		{"gpc_rate(2)", "needs (count,period)"},
		{"conn_cnt(1s)", "takes no argument"},
		{"nope", "unknown data type"},
		{"http_req_rate(10s", "missing closing parenthesis"},
	} {
		_, err := ParseStore(nil, bad.spec, time.ParseDuration)
		if err == nil || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("ParseStore(%q) = %v, want error containing %q", bad.spec, err, bad.msg)
		}
	}
	bad := &Schema{Type: KeyString, IPv6Prefix: 64}
	if err := bad.Init(); err == nil {
		t.Error("ipv6_prefix on a string table accepted")
	}
	if _, err := mustSchema(t, "ip", "gpc(1)").Column("gpc3"); err == nil || !strings.Contains(err.Error(), "it stores: gpc0") {
		t.Errorf("unknown column error: %v", err)
	}
}

func TestFormatDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{0: "0s", 10 * time.Second: "10s", time.Minute: "1m", 2 * time.Hour: "2h",
		24 * time.Hour: "1d", 250 * time.Microsecond: "250us", 1500 * time.Millisecond: "1500ms"} {
		if got := FormatDuration(in); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestKeys(t *testing.T) {
	ip := mustSchema(t, "ip")
	a, _ := ip.KeyFrom("192.0.2.7")
	b, _ := ip.KeyFrom("::ffff:192.0.2.7")
	c, _ := ip.KeyFrom("192.0.2.7:443")
	d, _ := ip.KeyFrom("[2001:db8::1]")
	if a != b || a != c {
		t.Error("the same IPv4 address in three spellings gave different keys")
	}
	if ip.FormatKey(a) != "192.0.2.7" || ip.FormatKey(d) != "2001:db8::1" {
		t.Errorf("format: %s %s", ip.FormatKey(a), ip.FormatKey(d))
	}
	if _, err := ip.KeyFrom("not-an-ip"); err == nil {
		t.Error("bad address accepted")
	}

	grouped := mustSchema(t, "ipv6")
	grouped.IPv6Prefix, grouped.IPv4Prefix = 64, 24
	if err := grouped.Init(); err != nil {
		t.Fatal(err)
	}
	x, _ := grouped.KeyFrom("2001:db8:1:2:aaaa::1")
	y, _ := grouped.KeyFrom("2001:db8:1:2:bbbb::9")
	z, _ := grouped.KeyFrom("2001:db8:1:3::1")
	if x != y || x == z {
		t.Error("ipv6_prefix 64 did not group by /64")
	}
	if got := grouped.FormatKey(x); got != "2001:db8:1:2::/64" {
		t.Errorf("grouped key prints %q", got)
	}
	if back, err := grouped.ParseKey("2001:db8:1:2::/64"); err != nil || back != x {
		t.Errorf("parsing the printed key: %v", err)
	}
	v4a, _ := grouped.KeyFrom("198.51.100.1")
	v4b, _ := grouped.KeyFrom("198.51.100.200")
	if v4a != v4b || grouped.FormatKey(v4a) != "198.51.100.0/24" {
		t.Errorf("ipv4_prefix 24: %s", grouped.FormatKey(v4a))
	}

	in := mustSchema(t, "integer")
	k, err := in.KeyFrom("-42")
	if err != nil || in.FormatKey(k) != "-42" {
		t.Errorf("integer key: %v %s", err, in.FormatKey(k))
	}
	if _, err := in.KeyFrom("4x"); err == nil {
		t.Error("bad integer accepted")
	}

	st := &Schema{Type: KeyString, KeyLen: 4}
	if err := st.Init(); err != nil {
		t.Fatal(err)
	}
	k1, _ := st.KeyFrom("abcdef")
	k2, _ := st.KeyFrom("abcdXY")
	if k1 != k2 || st.FormatKey(k1) != "abcd" {
		t.Error("string keys are not truncated to len")
	}
	bin := &Schema{Type: KeyBinary, KeyLen: 4}
	if err := bin.Init(); err != nil {
		t.Fatal(err)
	}
	kb, _ := bin.KeyFrom("\x01\x02")
	if got := bin.FormatKey(kb); got != "01020000" {
		t.Errorf("binary key prints %q, want zero-padded 01020000", got)
	}
	if back, err := bin.ParseKey("01020000"); err != nil || back != kb {
		t.Errorf("binary ParseKey: %v", err)
	}
	if _, err := bin.ParseKey("zz"); err == nil {
		t.Error("bad hex accepted")
	}
}

func TestRateArithmetic(t *testing.T) {
	tb, clk := newTable(t, mustSchema(t, "ip", "http_req_rate(10s)"), 10, 0)
	k := key(t, tb, "192.0.2.1")
	hit := func(n int) {
		for range n {
			r, err := tb.Acquire(k, Events{Req: true})
			if err != nil {
				t.Fatal(err)
			}
			tb.Release(r, Events{ReqEnd: true})
		}
	}
	rate := func() uint64 { return get(t, tb, k, "http_req_rate") }

	for _, step := range []struct {
		advance time.Duration
		hits    int
		want    uint64
		what    string
	}{
		{0, 30, 30, "first period, at its start"},
		{4 * time.Second, 10, 40, "later in the first period"},
		{8500 * time.Millisecond, 0, 30, "2.5s into the second period: 40 previous × 7.5/10"},
		{0, 5, 35, "then 5 more: 30 + 5"},
		{6500 * time.Millisecond, 0, 9, "9s into the second period: 40 × 1/10 + 5"},
		{time.Second, 0, 5, "start of the third period: previous 5 × 10/10"},
		{20 * time.Second, 0, 0, "after two idle periods"},
	} {
		clk.advance(step.advance)
		hit(step.hits)
		if got := rate(); got != step.want {
			t.Fatalf("%s: rate %d, want %d", step.what, got, step.want)
		}
	}
}

// TestRateError measures the two-period estimate against an exact sliding
// window for steady traffic with a random phase: the figure the README
// states.
func TestRateError(t *testing.T) {
	const period = 10_000 // ms
	tb, clk := newTable(t, mustSchema(t, "ip", "http_req_rate(10s)"), 10, 0)
	k := key(t, tb, "192.0.2.1")
	var events []int64
	worst := 0.0
	step := int64(37) // ms between events: ~270 per period
	for i := 0; i < 4000; i++ {
		clk.ms.Add(step)
		r, _ := tb.Acquire(k, Events{Req: true})
		tb.Release(r, Events{})
		events = append(events, clk.now())
		if i < 600 {
			continue
		}
		exact := 0
		for _, e := range events {
			if e > clk.now()-period {
				exact++
			}
		}
		est := get(t, tb, k, "http_req_rate")
		if d := float64(int(est)-exact) / float64(exact); d < -worst || d > worst {
			worst = max(d, -d)
		}
	}
	if worst > 0.01 {
		t.Errorf("worst relative error %.4f for steady traffic, want ≤ 1%%", worst)
	}
	t.Logf("worst relative error for steady traffic: %.4f", worst)
}

func TestEveryDataType(t *testing.T) {
	s := mustSchema(t, "ip", "conn_cnt", "conn_cur", "conn_rate(10s)", "req_cur", "http_req_cnt",
		"http_req_rate(10s)", "http_err_cnt", "http_err_rate(10s)", "http_fail_cnt", "http_fail_rate(10s)",
		"bytes_in_cnt", "bytes_in_rate(10s)", "bytes_out_cnt", "bytes_out_rate(10s)", "gpc(2)",
		"gpc_rate(2,10s)", "gpt(2)", "server_id", "ban")
	tb, clk := newTable(t, s, 10, time.Minute)
	k := key(t, tb, "2001:db8::5")

	conn, err := tb.Acquire(k, Events{Conn: true})
	if err != nil {
		t.Fatal(err)
	}
	conn2, _ := tb.Acquire(k, Events{Conn: true})
	statuses := []int{200, 404, 403, 429, 500, 501, 502, 505, 503, 301}
	for _, st := range statuses {
		req, _ := tb.Acquire(k, Events{Req: true, In: 100})
		if v := get(t, tb, k, "req_cur"); v != 1 {
			t.Fatalf("req_cur while a request is in flight = %d", v)
		}
		tb.Release(req, Events{ReqEnd: true, Status: st, Out: 1000})
	}
	tb.Release(conn2, Events{ConnEnd: true})
	big := uint64(5) << 32 // bytes counters are 64-bit
	tb.Update(conn, Events{Out: big})

	gpc1, gpt1, sid := col(t, tb, "gpc1"), col(t, tb, "gpt1"), col(t, tb, "server_id")
	tb.Add(conn, col(t, tb, "gpc0"), 1)
	tb.Add(conn, gpc1, 3)
	tb.Set(conn, gpt1, 7)
	tb.Set(conn, sid, 12345)
	tb.Set(conn, col(t, tb, "ban"), uint64((10 * time.Minute).Milliseconds()))

	want := map[string]uint64{
		"conn_cnt": 2, "conn_cur": 1, "conn_rate": 2, "req_cur": 0,
		"http_req_cnt": 10, "http_req_rate": 10,
		"http_err_cnt": 3, "http_err_rate": 3, // 404 403 429
		"http_fail_cnt": 3, "http_fail_rate": 3, // 500 502 503 (not 501, 505)
		"bytes_in_cnt": 1000, "bytes_in_rate": 1000,
		"bytes_out_cnt": 10000 + big, "bytes_out_rate": 10000 + big,
		"gpc0": 1, "gpc1": 3, "gpc0_rate": 1, "gpc1_rate": 3, "gpt0": 0, "gpt1": 7,
		"server_id": 12345, "ban": 600000,
	}
	for name, w := range want {
		if got := get(t, tb, k, name); got != w {
			t.Errorf("%s = %d, want %d", name, got, w)
		}
	}
	if !tb.Banned(conn) || !tb.LookupBanned(k) {
		t.Error("entry not banned")
	}
	clk.advance(11 * time.Minute)
	if tb.Banned(conn) {
		t.Error("ban still in force after it ended")
	}
	if get(t, tb, k, "gpc0_rate") != 0 || get(t, tb, k, "gpc0") != 1 {
		t.Error("gpc0_rate should decay while gpc0 stays")
	}
	tb.Release(conn, Events{ConnEnd: true})
	if get(t, tb, k, "conn_cur") != 0 {
		t.Error("conn_cur not back to 0")
	}
	// conn_cur never goes below zero.
	r, _ := tb.Acquire(k, Events{})
	tb.Release(r, Events{ConnEnd: true, ReqEnd: true})
	if get(t, tb, k, "conn_cur") != 0 || get(t, tb, k, "req_cur") != 0 {
		t.Error("gauges went below zero")
	}
}

func TestSaturation(t *testing.T) {
	tb, _ := newTable(t, mustSchema(t, "ip", "gpc(1)"), 1, 0)
	k := key(t, tb, "192.0.2.1")
	if err := tb.Put(k, []Write{{col(t, tb, "gpc0"), 1<<32 - 2}}); err != nil {
		t.Fatal(err)
	}
	r, _ := tb.Acquire(k, Events{})
	tb.Add(r, col(t, tb, "gpc0"), 10)
	tb.Release(r, Events{})
	if got := get(t, tb, k, "gpc0"); got != 1<<32-1 {
		t.Errorf("gpc0 = %d, want it saturated at 2^32-1", got)
	}
}

func TestEvictionLRUSparesHeld(t *testing.T) {
	tb, clk := newTable(t, mustSchema(t, "integer", "gpc(1)"), 3, 0)
	k := func(i int) Key { return tb.Schema().KeyFromInt(int64(i)) }
	held, err := tb.Acquire(k(1), Events{}) // oldest, but held by a live connection
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 3} {
		clk.advance(time.Second)
		r, _ := tb.Acquire(k(i), Events{})
		tb.Release(r, Events{})
	}
	// Use 2 again: 3 is now the least recently used free entry.
	r, _ := tb.Acquire(k(2), Events{})
	tb.Release(r, Events{})
	r, err = tb.Acquire(k(4), Events{})
	if err != nil {
		t.Fatal(err)
	}
	tb.Release(r, Events{})
	if _, ok := tb.Snapshot(k(3)); ok {
		t.Error("entry 3 (least recently used, free) survived")
	}
	for _, i := range []int{1, 2, 4} {
		if _, ok := tb.Snapshot(k(i)); !ok {
			t.Errorf("entry %d was evicted", i)
		}
	}
	if tb.Len() != 3 || tb.Evictions() != 1 {
		t.Errorf("len %d evictions %d, want 3 and 1", tb.Len(), tb.Evictions())
	}
	// Hold every entry: a new key cannot get in.
	h2, _ := tb.Acquire(k(2), Events{})
	h4, _ := tb.Acquire(k(4), Events{})
	if _, err := tb.Acquire(k(5), Events{}); !errors.Is(err, ErrFull) {
		t.Errorf("insert into a fully held table: %v, want ErrFull", err)
	}
	for _, r := range []Ref{held, h2, h4} {
		tb.Release(r, Events{})
	}
	if _, err := tb.Acquire(k(5), Events{}); err != nil {
		t.Errorf("insert after release: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	tb, clk := newTable(t, mustSchema(t, "ip", "http_req_cnt"), 100, 10*time.Second)
	a, b := key(t, tb, "192.0.2.1"), key(t, tb, "192.0.2.2")
	ra, _ := tb.Acquire(a, Events{Req: true})
	tb.Release(ra, Events{})
	hb, _ := tb.Acquire(b, Events{Req: true}) // held: must not expire
	clk.advance(9 * time.Second)
	if _, ok := tb.Lookup(a, col(t, tb, "http_req_cnt")); !ok {
		t.Fatal("entry expired early")
	}
	if e, _ := tb.Snapshot(a); e.ExpiresIn != time.Second {
		t.Errorf("expires_in = %v, want 1s", e.ExpiresIn)
	}
	clk.advance(2 * time.Second)
	if _, ok := tb.Lookup(a, col(t, tb, "http_req_cnt")); ok {
		t.Error("expired entry still readable")
	}
	if n := tb.Sweep(); n != 1 {
		t.Errorf("sweep removed %d, want 1", n)
	}
	if tb.Len() != 1 {
		t.Errorf("len %d after sweep, want 1 (the held entry)", tb.Len())
	}
	// A fresh track of an expired key starts from zero.
	ra, _ = tb.Acquire(a, Events{Req: true})
	tb.Release(ra, Events{})
	if got := get(t, tb, a, "http_req_cnt"); got != 1 {
		t.Errorf("counter of a re-created entry = %d, want 1", got)
	}
	// Releasing refreshes the held entry's expiry.
	clk.advance(30 * time.Second)
	tb.Release(hb, Events{})
	clk.advance(5 * time.Second)
	tb.Sweep()
	if _, ok := tb.Snapshot(b); !ok {
		t.Error("entry expired 5s after its holder released it (expire is 10s)")
	}
}

func TestDeleteWhileHeldAndPut(t *testing.T) {
	tb, _ := newTable(t, mustSchema(t, "string", "gpc(1)", "gpt(1)", "ban"), 10, time.Minute)
	k := key(t, tb, "alice")
	r, _ := tb.Acquire(k, Events{})
	if !tb.Delete(k) {
		t.Fatal("delete reported no entry")
	}
	tb.Add(r, col(t, tb, "gpc0"), 5) // ignored: the entry is gone
	tb.Release(r, Events{})
	if _, ok := tb.Snapshot(k); ok {
		t.Fatal("deleted entry came back through a stale reference")
	}
	if err := tb.Put(k, []Write{{col(t, tb, "gpc0"), 1}, {col(t, tb, "gpt0"), 3}, {col(t, tb, "ban"), 60_000}}); err != nil {
		t.Fatal(err)
	}
	e, ok := tb.Snapshot(k)
	if !ok || fmt.Sprint(e.Values) != "[1 3 60000]" {
		t.Errorf("after put: %v %v", ok, e.Values)
	}
	if !tb.LookupBanned(k) {
		t.Error("put ban not in force")
	}
	n := 0
	tb.Range(func(Entry) bool { n++; return true })
	if n != 1 {
		t.Errorf("range saw %d entries", n)
	}
	tb.Clear()
	if tb.Len() != 0 {
		t.Error("clear left entries")
	}
}

func TestResize(t *testing.T) {
	tb, _ := newTable(t, mustSchema(t, "integer"), 100, 0)
	for i := range 100 {
		r, _ := tb.Acquire(tb.Schema().KeyFromInt(int64(i)), Events{})
		tb.Release(r, Events{})
	}
	tb.Resize(10)
	if tb.Len() != 10 {
		t.Errorf("len after resize = %d", tb.Len())
	}
	if _, ok := tb.Snapshot(tb.Schema().KeyFromInt(99)); !ok {
		t.Error("most recent entry evicted by resize")
	}
}

func TestCompatible(t *testing.T) {
	a := mustSchema(t, "ip", "http_req_rate(10s)", "gpc(1)")
	b := mustSchema(t, "ip", "http_req_rate(10s)", "gpc(1)")
	c := mustSchema(t, "ip", "http_req_rate(20s)", "gpc(1)")
	d := mustSchema(t, "ipv6", "http_req_rate(10s)", "gpc(1)")
	if !a.Compatible(b) || a.Compatible(c) || a.Compatible(d) {
		t.Error("Compatible is wrong")
	}
}

func TestReplicationDeltas(t *testing.T) {
	s := mustSchema(t, "ip", "http_req_cnt", "http_req_rate(10s)", "gpc(1)", "gpt(1)", "conn_cur")
	s.Replicated = true
	tb, _ := newTable(t, s, 10, 0)
	k := key(t, tb, "192.0.2.1")
	for range 3 {
		r, _ := tb.Acquire(k, Events{Req: true, Conn: true})
		tb.Release(r, Events{})
	}
	r, _ := tb.Acquire(k, Events{})
	tb.Add(r, col(t, tb, "gpc0"), 2)
	tb.Set(r, col(t, tb, "gpt0"), 9)
	tb.Release(r, Events{})

	var got []Delta
	tb.CollectDeltas(func(d Delta) { got = append(got, d) })
	if len(got) != 1 {
		t.Fatalf("%d deltas, want 1", len(got))
	}
	// columns: http_req_cnt http_req_rate gpc0 gpt0 conn_cur
	if fmt.Sprint(got[0].Adds) != "[3 3 2 0 0]" || fmt.Sprint(got[0].Values) != "[3 3 2 9 3]" {
		t.Errorf("delta adds %v values %v", got[0].Adds, got[0].Values)
	}
	got = nil
	tb.CollectDeltas(func(d Delta) { got = append(got, d) })
	if len(got) != 0 {
		t.Errorf("second collect without changes returned %d deltas", len(got))
	}
	// Another node counted 10 more: the cluster total is 13. One more local
	// request arrives before the merge.
	r, _ = tb.Acquire(k, Events{Req: true})
	tb.Release(r, Events{})
	if p := tb.Pending(k, col(t, tb, "http_req_cnt")); p != 1 {
		t.Errorf("pending = %d, want 1", p)
	}
	err := tb.Merge(k, []Remote{{col(t, tb, "http_req_cnt"), 13}, {col(t, tb, "http_req_rate"), 13},
		{col(t, tb, "gpt0"), 4}, {col(t, tb, "conn_cur"), 99}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{"http_req_cnt": 14, "http_req_rate": 14, "gpt0": 4, "conn_cur": 102} {
		if v := get(t, tb, k, name); v != want {
			t.Errorf("after merge %s = %d, want %d", name, v, want)
		}
	}
	got = nil
	tb.CollectDeltas(func(d Delta) { got = append(got, d) })
	if len(got) != 1 || got[0].Adds[0] != 1 {
		t.Errorf("delta after merge: %+v", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := mustSchema(t, "ip", "http_req_cnt", "http_req_rate(1s)", "conn_cur", "gpc(1)", "ban")
	tb, err := New(s, Options{Size: 500, Expire: 50 * time.Millisecond, Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	gpc0 := col(t, tb, "gpc0")
	hot := key(t, tb, "192.0.2.250")
	// Held for the whole test: never evicted or expired, so its counter
	// must see every request.
	hold, err := tb.Acquire(hot, Events{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	const workers, perWorker = 8, 2000
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k, _ := s.KeyFromAddr(netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)}))
				r, err := tb.Acquire(k, Events{Req: true, Conn: true})
				if err != nil {
					t.Error(err)
					return
				}
				tb.Add(r, gpc0, 1)
				tb.Get(r, gpc0)
				tb.Release(r, Events{ReqEnd: true, ConnEnd: true, Status: 200})
				hr, err := tb.Acquire(hot, Events{Req: true})
				if err == nil {
					tb.Release(hr, Events{ReqEnd: true})
				}
				if i%500 == 0 {
					tb.Sweep()
					tb.Range(func(Entry) bool { return true })
					tb.Delete(k)
				}
			}
		}()
	}
	wg.Wait()
	if tb.Len() > 500 {
		t.Errorf("len %d exceeds size 500", tb.Len())
	}
	if v, ok := tb.Lookup(hot, col(t, tb, "http_req_cnt")); !ok || v != workers*perWorker {
		t.Errorf("hot key counted %d requests (found %v), want %d", v, ok, workers*perWorker)
	}
	tb.Release(hold, Events{})
}

// TestConcurrentInsertBound floods a small table from several goroutines
// with distinct keys: the entries it lists afterwards are exactly its size
// (inserts that checked the count before reserving a slot overshot it).
func TestConcurrentInsertBound(t *testing.T) {
	s := mustSchema(t, "integer", "http_req_cnt")
	tb, err := New(s, Options{Size: 256, Shards: 8})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20_000 {
				r, err := tb.Acquire(s.KeyFromInt(int64(w*1_000_000+i)), Events{Req: true})
				if err != nil {
					t.Error(err)
					return
				}
				tb.Release(r, Events{})
			}
		}()
	}
	wg.Wait()
	n := 0
	tb.Range(func(Entry) bool { n++; return true })
	if n != 256 || tb.Len() != 256 {
		t.Errorf("after the flood: %d entries listed, Len %d, want 256", n, tb.Len())
	}
}

func TestStringKeyCutAtCharacter(t *testing.T) {
	s := &Schema{Type: KeyString, KeyLen: 4}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"abcé": "abc", "abcd": "abcd", "abcde": "abcd", "ab中": "ab", "é": "é",
		"abc\xa9\xa9": "abc\xa9", "a\xc3bcd": "a\xc3bc"} {
		k, err := s.KeyFrom(in)
		if err != nil || s.FormatKey(k) != want {
			t.Errorf("KeyFrom(%q) = %q, %v; want %q", in, s.FormatKey(k), err, want)
		}
	}
}

func TestBanClamped(t *testing.T) {
	s := mustSchema(t, "ip", "ban")
	tb, _ := newTable(t, s, 10, 0)
	k := key(t, tb, "192.0.2.1")
	ban, _ := tb.BanColumn()
	if err := tb.Put(k, []Write{{Column: ban, Value: 1<<63 - 1}}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, tb, k, "ban"); v != MaxBanMs {
		t.Errorf("ban of 2^63-1 ms reads %d ms left, want the clamp %d", v, uint64(MaxBanMs))
	}
}

// TestIndexAgainstMap inserts and deletes random keys in one shard (index
// growth, probe chains, deletion shifting entries back) and checks every
// key against a map after each round.
func TestIndexAgainstMap(t *testing.T) {
	for _, typ := range []string{"integer", "string"} {
		s := mustSchema(t, typ, "gpc(1)")
		tb, err := New(s, Options{Size: 1 << 16, Shards: 1, Now: func() int64 { return 1 }})
		if err != nil {
			t.Fatal(err)
		}
		gpc := col(t, tb, "gpc0")
		model := map[int]uint64{}
		keyOf := func(i int) Key {
			if typ == "integer" {
				return s.KeyFromInt(int64(i))
			}
			k, _ := s.KeyFrom(fmt.Sprintf("key-%d", i))
			return k
		}
		rnd := uint64(12345)
		next := func(n int) int { rnd = rnd*6364136223846793005 + 1442695040888963407; return int(rnd>>33) % n }
		for round := range 20 {
			for range 2000 {
				i := next(3000)
				if next(3) == 0 {
					if tb.Delete(keyOf(i)) != (model[i] != 0) {
						t.Fatalf("%s round %d: Delete(%d) disagrees with the model", typ, round, i)
					}
					delete(model, i)
					continue
				}
				r, err := tb.Acquire(keyOf(i), Events{})
				if err != nil {
					t.Fatal(err)
				}
				tb.Add(r, gpc, 1)
				tb.Release(r, Events{})
				model[i]++
			}
			for i := range 3000 {
				v, ok := tb.Lookup(keyOf(i), gpc)
				if ok != (model[i] != 0) || v != model[i] {
					t.Fatalf("%s round %d: key %d reads %d %v, model %d", typ, round, i, v, ok, model[i])
				}
			}
			if tb.Len() != len(model) {
				t.Fatalf("%s round %d: len %d, model %d", typ, round, tb.Len(), len(model))
			}
		}
	}
}
