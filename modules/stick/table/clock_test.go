package table

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// tickers counts the goroutines running tickClock once it is want, or
// after a second (other goroutines of the test binary come and go, so the
// total would be a flaky measure; a ticker just started, or just stopped
// and still unwinding, takes a moment to show in or leave the stacks).
func tickers(want int) int {
	buf := make([]byte, 1<<20)
	n := 0
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if n = strings.Count(string(buf[:runtime.Stack(buf, true)]), "table.tickClock("); n == want {
			break
		}
	}
	return n
}

// TestClockStopsWithLastUser: the ticker goroutine runs while the clock has
// users and is gone once the last one stops; CoarseNow follows the wall
// clock in both states.
func TestClockStopsWithLastUser(t *testing.T) {
	base := tickers(0)
	stop1 := StartClock()
	stop2 := StartClock()
	if got := tickers(base + 1); got != base+1 {
		t.Fatalf("two users: %d tickers, want %d (one ticker)", got, base+1)
	}
	time.Sleep(5 * time.Millisecond)
	if d := time.Now().UnixMilli() - CoarseNow(); d < -2 || d > 50 {
		t.Errorf("running clock off by %d ms", d)
	}
	stop1()
	stop1() // a second call is harmless
	if got := tickers(base + 1); got != base+1 {
		t.Fatalf("one user left: %d tickers, want %d", got, base+1)
	}
	stop2()
	if got := tickers(base); got != base {
		t.Fatalf("no user: %d tickers, want %d (ticker stopped)", got, base)
	}
	if d := time.Now().UnixMilli() - CoarseNow(); d < -2 || d > 2 {
		t.Errorf("stopped clock off by %d ms", d)
	}
}

// TestClockParksWhenIdle: a started clock that nobody reads stops ticking
// (an idle edge with a stick table must not wake a thousand times a
// second), reads the wall clock meanwhile, and ticks again once reads come
// in quickly.
func TestClockParksWhenIdle(t *testing.T) {
	stop := StartClock()
	defer stop()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 5 s: %s", what)
			}
		}
	}
	waitFor("the unread clock still ticks", func() bool { return coarseMs.Load() == 0 })
	if d := time.Now().UnixMilli() - CoarseNow(); d < -2 || d > 2 {
		t.Errorf("parked clock off by %d ms", d)
	}
	waitFor("busy reads did not wake the clock", func() bool {
		for range 64 {
			CoarseNow()
		}
		return coarseMs.Load() != 0
	})
	time.Sleep(5 * time.Millisecond)
	if d := time.Now().UnixMilli() - CoarseNow(); d < -2 || d > 50 {
		t.Errorf("woken clock off by %d ms", d)
	}
	waitFor("the clock did not park again", func() bool { return coarseMs.Load() == 0 })
}

// BenchmarkCoarseNow is the read every table operation makes.
func BenchmarkCoarseNow(b *testing.B) {
	defer StartClock()()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			CoarseNow()
		}
	})
}
