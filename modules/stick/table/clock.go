package table

import (
	"sync"
	"sync/atomic"
	"time"
)

// The default clock is coarse, as HAProxy's now_ms: while a user holds it
// started (StartClock) and tables read it often, one goroutine stores the
// wall clock in milliseconds every millisecond and tables read it with one
// atomic load. Reading the time for every operation costs more than the
// whole table operation on some virtual machines. A clock nobody read for
// parkAfterTicks ticks parks (an idle edge must not wake a thousand times
// a second) and CoarseNow reads the wall clock itself until reads come in
// quickly again (wakeReads within wakeWindowMs); with no user the ticker is
// stopped.
var (
	coarseMs    atomic.Int64 // 0 while the ticker is stopped or parked
	clockRead   atomic.Bool  // a read of the ticking clock since the ticker last looked
	clockParked atomic.Bool
	clockWake   = make(chan struct{}, 1)
	slowFrom    atomic.Int64 // start (Unix ms) of the window counting parked reads
	slowReads   atomic.Int32 // parked reads in that window

	clockMu    sync.Mutex
	clockUsers int
	clockStop  chan struct{}
	clockDone  chan struct{}
)

const (
	parkAfterTicks = 250 // a quarter of a second without a read
	wakeReads      = 8   // parked reads within wakeWindowMs that restart the ticker
	wakeWindowMs   = 10
)

// StartClock starts the coarse clock's ticker, or counts one more user of
// the running one. The returned function ends this use; the ticker stops
// when the last use ends. Call it once.
func StartClock() (stop func()) {
	clockMu.Lock()
	defer clockMu.Unlock()
	if clockUsers == 0 {
		clockStop, clockDone = make(chan struct{}), make(chan struct{})
		clockRead.Store(true)
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

// tickClock ticks while the clock is read, parks when it is not, and
// returns when stop closes.
func tickClock(stop, done chan struct{}) {
	defer close(done)
	defer clockParked.Store(false)
	for tickWhileRead(stop) {
		select {
		case <-stop:
			return
		case <-clockWake:
			clockRead.Store(true)
			clockParked.Store(false)
			coarseMs.Store(time.Now().UnixMilli())
		}
	}
}

// tickWhileRead stores the time every millisecond. It returns false when
// stop closes, true when the clock parked for lack of reads.
func tickWhileRead(stop chan struct{}) bool {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop:
			return false
		case now := <-tick.C:
			coarseMs.Store(now.UnixMilli())
			if n%parkAfterTicks == 0 && !clockRead.Swap(false) {
				clockParked.Store(true)
				coarseMs.Store(0)
				return true
			}
		}
	}
}

// CoarseNow returns the wall clock in Unix milliseconds: with a resolution
// of about one millisecond from the ticker while the clock ticks, from
// time.Now otherwise.
func CoarseNow() int64 {
	if ms := coarseMs.Load(); ms != 0 {
		if !clockRead.Load() {
			clockRead.Store(true)
		}
		return ms
	}
	now := time.Now().UnixMilli()
	if clockParked.Load() {
		if from := slowFrom.Load(); now-from > wakeWindowMs {
			slowFrom.Store(now)
			slowReads.Store(1)
		} else if slowReads.Add(1) >= wakeReads {
			select {
			case clockWake <- struct{}{}:
			default:
			}
		}
	}
	return now
}
