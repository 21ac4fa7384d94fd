package table

import (
	"sync"
	"sync/atomic"
	"time"
)

// The default clock is coarse, as HAProxy's now_ms: one goroutine stores the
// wall clock in milliseconds every millisecond and tables read it with one
// atomic load. Reading the time for every operation costs more than the
// whole table operation on some virtual machines.
var (
	coarseMs    atomic.Int64
	coarseStart sync.Once
)

// CoarseNow returns the wall clock in Unix milliseconds with a resolution of
// about one millisecond.
func CoarseNow() int64 {
	coarseStart.Do(func() {
		coarseMs.Store(time.Now().UnixMilli())
		go func() {
			tick := time.NewTicker(time.Millisecond)
			for now := range tick.C {
				coarseMs.Store(now.UnixMilli())
			}
		}()
	})
	return coarseMs.Load()
}
