package stats

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// flightVar is the request variable holding the request's *flight.
const flightVar = "rampart_stats.flight"

// flight is one proxied request: the upstream of its latest attempt, whose
// response is recorded once the request has ended (the server cancels the
// request's context when its handler returns).
type flight struct {
	ctx  context.Context
	repl *caddy.Replacer
	fig  atomic.Pointer[figures]
}

// settleEvery is how often the flights are looked at while some are
// pending; a snapshot settles them at once, so the page is exact.
const settleEvery = 10 * time.Millisecond

// flightQueue holds the flights not recorded yet. Recording in batches
// costs no goroutine and no context registration per request (as a
// context.AfterFunc would): one goroutine settles the queue while it is
// not empty, and stops when it is.
type flightQueue struct {
	mu       sync.Mutex
	pending  []*flight
	settling bool // the settling goroutine runs
}

// flights is the process's queue: the figures it records are the
// process's too (package-level series, by upstream address).
var flights flightQueue

// add queues a flight, starting the settling goroutine if none runs.
func (q *flightQueue) add(f *flight) {
	q.mu.Lock()
	q.pending = append(q.pending, f)
	start := !q.settling
	q.settling = true
	q.mu.Unlock()
	if start {
		go q.run()
	}
}

// run settles the queue every settleEvery until it is empty.
func (q *flightQueue) run() {
	t := time.NewTicker(settleEvery)
	defer t.Stop()
	for range t.C {
		if !q.settle(true) {
			return
		}
	}
}

// settle records the responses of the flights whose request has ended and
// keeps the others. It reports whether some are still pending; with last,
// an empty queue also ends the settling goroutine (the caller's).
func (q *flightQueue) settle(last bool) (pending bool) {
	q.mu.Lock()
	batch := q.pending
	q.pending = nil
	q.mu.Unlock()
	kept := batch[:0]
	for _, f := range batch {
		if f.ctx.Err() != nil {
			f.fig.Load().record(f.repl)
		} else {
			kept = append(kept, f)
		}
	}
	clear(batch[len(kept):]) // the ended requests can be collected
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		q.pending = kept
	} else {
		q.pending = append(q.pending, kept...)
	}
	pending = len(q.pending) > 0
	if last && !pending {
		q.settling = false
	}
	return pending
}
