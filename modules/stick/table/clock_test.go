package table

import (
	"runtime"
	"testing"
	"time"
)

// TestClockStopsWithLastUser: the ticker goroutine runs while the clock has
// users and is gone once the last one stops; CoarseNow follows the wall
// clock in both states.
func TestClockStopsWithLastUser(t *testing.T) {
	base := runtime.NumGoroutine()
	stop1 := StartClock()
	stop2 := StartClock()
	if got := runtime.NumGoroutine(); got != base+1 {
		t.Fatalf("two users: %d goroutines, want %d (one ticker)", got, base+1)
	}
	time.Sleep(5 * time.Millisecond)
	if d := time.Now().UnixMilli() - CoarseNow(); d < -2 || d > 50 {
		t.Errorf("running clock off by %d ms", d)
	}
	stop1()
	stop1() // a second call is harmless
	if got := runtime.NumGoroutine(); got != base+1 {
		t.Fatalf("one user left: %d goroutines, want %d", got, base+1)
	}
	stop2()
	if got := runtime.NumGoroutine(); got != base {
		t.Fatalf("no user: %d goroutines, want %d (ticker stopped)", got, base)
	}
	if d := time.Now().UnixMilli() - CoarseNow(); d < -2 || d > 2 {
		t.Errorf("stopped clock off by %d ms", d)
	}
}
