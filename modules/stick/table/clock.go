package table

import (
	"sync"
	"sync/atomic"
	"time"
)

// The default clock is coarse, as HAProxy's now_ms: while a user holds it
// started (StartClock), one goroutine stores the wall clock in milliseconds
// every millisecond and tables read it with one atomic load. Reading the
// time for every operation costs more than the whole table operation on
// some virtual machines. With no user the ticker is stopped and CoarseNow
// reads the wall clock itself.
var (
	coarseMs   atomic.Int64 // 0 while the ticker is stopped
	clockMu    sync.Mutex
	clockUsers int
	clockStop  chan struct{}
	clockDone  chan struct{}
)

// StartClock starts the coarse clock's ticker, or counts one more user of
// the running one. The returned function ends this use; the ticker stops
// when the last use ends. Call it once.
func StartClock() (stop func()) {
	clockMu.Lock()
	defer clockMu.Unlock()
	if clockUsers == 0 {
		clockStop, clockDone = make(chan struct{}), make(chan struct{})
		coarseMs.Store(time.Now().UnixMilli())
		go tickClock(clockStop, clockDone)
	}
	clockUsers++
	var once sync.Once
	return func() { once.Do(releaseClock) }
}

func releaseClock() {
	clockMu.Lock()
	defer clockMu.Unlock()
	if clockUsers--; clockUsers == 0 {
		close(clockStop)
		<-clockDone
		coarseMs.Store(0)
	}
}

func tickClock(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			coarseMs.Store(now.UnixMilli())
		}
	}
}

// CoarseNow returns the wall clock in Unix milliseconds: with a resolution
// of about one millisecond from the ticker while the clock is started,
// from time.Now otherwise.
func CoarseNow() int64 {
	if ms := coarseMs.Load(); ms != 0 {
		return ms
	}
	return time.Now().UnixMilli()
}
