package table

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func benchSchema(b *testing.B) *Schema {
	return mustSchema(b, "ip", "http_req_rate(10s)", "conn_cur", "gpc(1)")
}

func ipKeys(s *Schema, n int) []Key {
	keys := make([]Key, n)
	for i := range keys {
		keys[i], _ = s.KeyFromAddr(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	return keys
}

// BenchmarkTrackRead is the hot path of an HTTP request on an existing key:
// track (count the request and hold the entry), read a rate as the stick
// matcher does, and release with the response. Target: ≤150 ns/op, 0 allocs.
func BenchmarkTrackRead(b *testing.B) { benchTrackRead(b, false) }

// BenchmarkTrackReadShared is BenchmarkTrackRead on a replicated (shared)
// table: the request path also records deltas and dirty marks.
func BenchmarkTrackReadShared(b *testing.B) { benchTrackRead(b, true) }

func benchTrackRead(b *testing.B, replicated bool) {
	defer StartClock()()
	s := benchSchema(b)
	s.Replicated = replicated
	tb, err := New(s, Options{Size: 1 << 20, Expire: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	rate, _ := s.Column("http_req_rate")
	keys := ipKeys(s, 1024)
	for _, k := range keys {
		r, _ := tb.Acquire(k, Events{})
		tb.Release(r, Events{})
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		r, err := tb.Acquire(keys[i&1023], Events{Req: true})
		if err != nil {
			b.Fatal(err)
		}
		tb.Get(r, rate)
		tb.Release(r, Events{ReqEnd: true, Status: 200})
		i++
	}
}

// BenchmarkTrackReadParallel is BenchmarkTrackRead from every core over one
// hot set of 4096 keys that all cores share: the worst case for scaling,
// since every entry and shard lock is written by both cores. Run with
// -cpu 1,2.
func BenchmarkTrackReadParallel(b *testing.B) {
	benchTrackReadParallel(b, 1<<12, func(worker, i uint32) uint32 { return worker*7919 + i })
}

// BenchmarkTrackReadParallelManyClients tracks 131072 clients picked at
// random by each core, as a busy edge sees them: the working set is larger
// than the caches and two cores rarely touch the same entry at once. Run
// with -cpu 1,2.
func BenchmarkTrackReadParallelManyClients(b *testing.B) {
	benchTrackReadParallel(b, 1<<17, func(worker, i uint32) uint32 {
		// a multiplicative hash of (worker, i): a fixed pseudo-random walk
		return (worker<<24 ^ i) * 2654435761
	})
}

// benchTrackReadParallel tracks, reads and releases keys[pick(worker,
// i) % n] from every core, reporting CPU time per operation next to wall
// time: if it stays flat from -cpu 1 to -cpu 2, operations do not slow
// each other down and throughput scales with the cores the machine gives.
func benchTrackReadParallel(b *testing.B, n int, pick func(worker, i uint32) uint32) {
	defer StartClock()()
	s := benchSchema(b)
	tb, err := New(s, Options{Size: 1 << 20, Expire: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	rate, _ := s.Column("http_req_rate")
	keys := ipKeys(s, n)
	for _, k := range keys {
		r, _ := tb.Acquire(k, Events{})
		tb.Release(r, Events{})
	}
	var worker atomic.Uint32
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	defer func() {
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	}()
	mask := uint32(n - 1)
	b.RunParallel(func(pb *testing.PB) {
		w := worker.Add(1)
		for i := uint32(0); pb.Next(); i++ {
			r, err := tb.Acquire(keys[pick(w, i)&mask], Events{Req: true})
			if err != nil {
				b.Error(err)
				return
			}
			tb.Get(r, rate)
			tb.Release(r, Events{ReqEnd: true, Status: 200})
		}
	})
}

// processCPU returns the user+system CPU time of the process in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkLookup is the stick matcher with `key <expr>`: a read without
// tracking.
func BenchmarkLookup(b *testing.B) {
	defer StartClock()()
	s := benchSchema(b)
	tb, _ := New(s, Options{Size: 1 << 20})
	rate, _ := s.Column("http_req_rate")
	keys := ipKeys(s, 1024)
	for _, k := range keys {
		r, _ := tb.Acquire(k, Events{Req: true})
		tb.Release(r, Events{})
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		tb.Lookup(keys[i&1023], rate)
		i++
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkBytesPerEntry fills a 1,000,000-entry ip table storing
// http_req_rate, conn_cur and gpc0 and reports the heap it takes per entry
// (runtime.MemStats). Target: ≤128 B/entry.
func BenchmarkBytesPerEntry(b *testing.B) {
	s := benchSchema(b)
	benchBytesPerEntry(b, s, func(i int) Key {
		k, _ := s.KeyFromAddr(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		return k
	})
}

// BenchmarkBytesPerEntryString32 is BenchmarkBytesPerEntry for the keys of
// integration/bench/stick_rss.sh: 1,000,000 distinct 32-byte strings
// storing http_req_rate(10s), req_cur and gpc0.
func BenchmarkBytesPerEntryString32(b *testing.B) {
	s := mustSchema(b, "string", "http_req_rate(10s)", "req_cur", "gpc(1)")
	benchBytesPerEntry(b, s, func(i int) Key {
		k, _ := s.KeyFrom(fmt.Sprintf("k01%029d", i))
		return k
	})
}

// benchBytesPerEntry fills a 1,000,000-entry table with keyOf(0..n-1), one
// tracked request each, and reports the heap per entry.
func benchBytesPerEntry(b *testing.B, s *Schema, keyOf func(int) Key) {
	const n = 1_000_000
	b.ReportAllocs()
	for b.Loop() {
		before := heapInUse()
		tb, err := New(s, Options{Size: n, Expire: 10 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			r, err := tb.Acquire(keyOf(i), Events{Req: true, Conn: true})
			if err != nil {
				b.Fatal(err)
			}
			tb.Release(r, Events{ReqEnd: true, ConnEnd: true})
		}
		after := heapInUse()
		if tb.Len() != n {
			b.Fatalf("len %d", tb.Len())
		}
		b.ReportMetric(float64(after-before)/n, "B/entry")
		runtime.KeepAlive(tb)
	}
}

// BenchmarkFlood sends 1,000,000 distinct keys through a full
// 100,000-entry table, then 1,000,000 more (the attack the size bound is
// for), and reports the heap per table slot when full and after each flood,
// and the evictions: memory stays at the table's bound.
func BenchmarkFlood(b *testing.B) {
	b.ReportAllocs()
	const size, floodKeys = 100_000, 1_000_000
	s := benchSchema(b)
	for b.Loop() {
		before := heapInUse()
		tb, _ := New(s, Options{Size: size, Expire: 10 * time.Minute})
		for i := range size {
			k, _ := s.KeyFromAddr(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}))
			r, _ := tb.Acquire(k, Events{Req: true})
			tb.Release(r, Events{})
		}
		full := heapInUse() - before
		flood := func(round int) uint64 {
			for i := range floodKeys {
				k, _ := s.KeyFromAddr(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 11: byte(round), byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}))
				r, err := tb.Acquire(k, Events{Req: true})
				if err != nil {
					b.Fatal(err)
				}
				tb.Release(r, Events{})
			}
			if tb.Len() > size {
				b.Fatalf("len %d over size %d", tb.Len(), size)
			}
			return heapInUse() - before
		}
		after1 := flood(1)
		after2 := flood(2)
		b.ReportMetric(float64(full)/size, "B/entry-full")
		b.ReportMetric(float64(after1)/size, "B/entry-after-1M-flood")
		b.ReportMetric(float64(after2)/size, "B/entry-after-2M-flood")
		b.ReportMetric(float64(tb.Evictions()), "evictions")
		runtime.KeepAlive(tb)
	}
}

// TestFloodStaysBounded checks the size bound itself (the benchmark above
// reports the memory): a flood of distinct keys never grows the table past
// its size, and the keys of steady clients that keep coming back survive.
func TestFloodStaysBounded(t *testing.T) {
	s := mustSchema(t, "ip", "http_req_cnt")
	tb, clk := newTable(t, s, 1000, time.Minute)
	legit := ipKeys(s, 10)
	for i := range 200_000 {
		k, _ := s.KeyFromAddr(netip.AddrFrom4([4]byte{172, byte(i >> 16), byte(i >> 8), byte(i)}))
		r, _ := tb.Acquire(k, Events{Req: true})
		tb.Release(r, Events{})
		if i%50 == 0 {
			for _, lk := range legit {
				r, _ := tb.Acquire(lk, Events{Req: true})
				tb.Release(r, Events{})
			}
			clk.advance(time.Millisecond)
		}
		if tb.Len() > 1000 {
			t.Fatalf("len %d over size", tb.Len())
		}
	}
	for _, lk := range legit {
		if v := get(t, tb, lk, "http_req_cnt"); v != 4000 {
			t.Errorf("a returning client's counter is %d, want 4000 (never evicted)", v)
		}
	}
}

// BenchmarkSweep is the once-a-second expiry sweep of a full
// 1,000,000-entry table in which nothing has expired: with CLOCK it
// examines every slot (an LRU list stopped at its first live entry).
func BenchmarkSweep(b *testing.B) {
	s := benchSchema(b)
	tb, err := New(s, Options{Size: 1_000_000, Expire: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range ipKeys(s, 1_000_000) {
		r, _ := tb.Acquire(k, Events{Req: true})
		tb.Release(r, Events{ReqEnd: true})
	}
	b.ReportAllocs()
	for b.Loop() {
		if n := tb.Sweep(); n != 0 {
			b.Fatalf("swept %d live entries", n)
		}
	}
}
