package redis

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Increment is one request's change of an entry of a strict table.
type Increment struct {
	Key []byte
	// Adds holds, by column, the increment of a Counter or Rate column and
	// the change (+1 on acquire, −1 on release) of this edge's Gauge.
	Adds []int64
	// Values holds the Value columns to write when Set.
	Values []uint64
	Set    bool
}

// ErrTimeout is the error of an increment whose result did not come back
// within the timeout: Redis may or may not have applied it.
var ErrTimeout = errors.New("redis: no result within the timeout")

// maxBatch bounds the increments sent in one pipelined round trip.
const maxBatch = 1024

// Batcher applies the increments of a strict table in Redis: each
// increment is one atomic script on its key that applies it and returns
// the entry's totals, so the k-th increment of a key reads exactly the
// k-th count cluster-wide; the increments of every request waiting at the
// same time share one pipelined round trip. It uses its Syncer's key layout
// and live edges, so async pulls, the admin API and Redis Cluster see the
// same keys. Add and Release are safe for concurrent use.
type Batcher struct {
	s       *Syncer
	timeout time.Duration
	script  *goredis.Script
	queue   chan *op
	done    chan struct{}
	batches atomic.Uint64
	sent    atomic.Uint64
}

// op is one queued increment; result is nil for a release nobody waits on.
type op struct {
	inc    Increment
	state  atomic.Uint32 // opWaiting, opSent or opAbandoned
	result chan opResult
}

const (
	opWaiting uint32 = iota
	opSent
	opAbandoned
)

type opResult struct {
	total Total
	err   error
}

// strictScript applies one increment and returns the entry's hash and its
// rate windows. KEYS[1] is the entry, KEYS[2..] the rate windows (current
// and previous of each period); ARGV: entry ttl ms, window ttl ms, then
// groups of (key index, op i|g|s, field, value): i adds, g adds to a gauge
// and deletes it at 0 or below, s sets.
const strictScript = `
for i = 3, #ARGV, 4 do
  local k = KEYS[tonumber(ARGV[i])]
  local op = ARGV[i+1]
  if op == 'i' then redis.call('HINCRBY', k, ARGV[i+2], ARGV[i+3])
  elseif op == 'g' then
    if redis.call('HINCRBY', k, ARGV[i+2], ARGV[i+3]) <= 0 then redis.call('HDEL', k, ARGV[i+2]) end
  else redis.call('HSET', k, ARGV[i+2], ARGV[i+3]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local out = {}
for i = 1, #KEYS do
  if i > 1 and redis.call('PTTL', KEYS[i]) == -1 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
`

// NewBatcher returns the batcher of the table of s; each Add waits at most
// timeout. It runs until ctx ends.
func NewBatcher(ctx context.Context, s *Syncer, timeout time.Duration) *Batcher {
	b := &Batcher{s: s, timeout: timeout, script: goredis.NewScript(strictScript), queue: make(chan *op, maxBatch), done: make(chan struct{})}
	go b.run(ctx)
	return b
}

// Done is closed when the batcher has stopped.
func (b *Batcher) Done() <-chan struct{} { return b.done }

// Add applies inc in Redis and returns the entry's totals after it (as
// Syncer.Sync's totals: Gauge columns are the other live edges' sum). It
// waits at most the timeout. An error means inc was certainly not applied,
// except ErrTimeout and errors from a sent batch, after which Redis may
// have applied it (unsure reports which).
func (b *Batcher) Add(ctx context.Context, inc Increment) (t Total, unsure bool, err error) {
	o := &op{inc: inc, result: make(chan opResult, 1)}
	timer := time.NewTimer(b.timeout)
	defer timer.Stop()
	select {
	case b.queue <- o:
	case <-timer.C:
		return Total{}, false, ErrTimeout
	case <-ctx.Done():
		return Total{}, false, ctx.Err()
	}
	select {
	case r := <-o.result:
		return r.total, r.err != nil && !notSent(r.err), r.err
	case <-timer.C:
	case <-ctx.Done():
	}
	if o.state.CompareAndSwap(opWaiting, opAbandoned) {
		return Total{}, false, ErrTimeout // never sent: the caller counts it
	}
	return Total{}, true, ErrTimeout
}

// Release queues inc (a gauge decrement) without waiting for its result.
// It reports false when the queue is full and inc was dropped.
func (b *Batcher) Release(inc Increment) bool {
	select {
	case b.queue <- &op{inc: inc}:
		return true
	default:
		return false
	}
}

// Stats returns the pipelined round trips sent (a batch that found the
// script unloaded on a node takes two) and the increments they carried.
func (b *Batcher) Stats() (batches, increments uint64) { return b.batches.Load(), b.sent.Load() }

func (b *Batcher) run(ctx context.Context) {
	defer close(b.done)
	ops := make([]*op, 0, maxBatch)
	for {
		ops = ops[:0]
		select {
		case <-ctx.Done():
			return
		case o := <-b.queue:
			ops = append(ops, o)
		}
	fill:
		for len(ops) < maxBatch {
			select {
			case o := <-b.queue:
				ops = append(ops, o)
			default:
				break fill
			}
		}
		b.send(ctx, ops)
	}
}

// send applies ops in one pipelined round trip and hands every waiting
// caller its result. A script the Redis node of a key does not know yet
// (NOSCRIPT: that command was not run) is sent again in full with EVAL, for
// those ops only, in a second round trip.
func (b *Batcher) send(ctx context.Context, ops []*op) {
	live := ops[:0:0]
	for _, o := range ops {
		if o.result == nil || o.state.CompareAndSwap(opWaiting, opSent) {
			live = append(live, o)
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	nowMs := time.Now().UnixMilli()
	b.sent.Add(uint64(len(live)))
	cmds := b.exec(ctx, live, nowMs, false)
	var again []*op
	var at []int
	for i, c := range cmds {
		if err := c.Err(); err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			again, at = append(again, live[i]), append(at, i)
		}
	}
	if len(again) > 0 {
		for j, c := range b.exec(ctx, again, nowMs, true) {
			cmds[at[j]] = c
		}
	}
	alive := b.s.liveEdges()
	for i, o := range live {
		if o.result == nil {
			continue
		}
		var r opResult
		r.total, r.err = b.total(o.inc.Key, cmds[i], alive, nowMs)
		o.result <- r
	}
}

// exec sends one pipeline of the ops' scripts, by their SHA or, with full,
// as the script itself (which also loads it on the key's node). Every
// command carries its own error.
func (b *Batcher) exec(ctx context.Context, ops []*op, nowMs int64, full bool) []*goredis.Cmd {
	pipe := b.s.client.Pipeline()
	cmds := make([]*goredis.Cmd, len(ops))
	for i, o := range ops {
		keys, args := b.args(o.inc, nowMs)
		if full {
			cmds[i] = b.script.Eval(ctx, pipe, keys, args...)
		} else {
			cmds[i] = b.script.EvalSha(ctx, pipe, keys, args...)
		}
	}
	_, _ = pipe.Exec(ctx)
	b.s.rt.Add(1)
	b.batches.Add(1)
	return cmds
}

// args builds the script call of one increment.
func (b *Batcher) args(inc Increment, nowMs int64) ([]string, []any) {
	s := b.s
	keys := []string{s.entryKey(inc.Key)}
	args := []any{s.entryTTL().Milliseconds(), 0}
	var maxPeriod time.Duration
	windows := map[time.Duration]int{}
	for i, col := range s.spec.Columns {
		switch col.Kind {
		case Counter:
			if inc.Adds[i] != 0 {
				args = append(args, 1, "i", col.Name, inc.Adds[i])
			}
		case Rate:
			maxPeriod = max(maxPeriod, col.Period)
			cur, ok := windows[col.Period]
			if !ok {
				w := nowMs / col.Period.Milliseconds()
				keys = append(keys, s.windowKey(inc.Key, col.Period, w), s.windowKey(inc.Key, col.Period, w-1))
				cur = len(keys) - 1
				windows[col.Period] = cur
			}
			if inc.Adds[i] != 0 {
				args = append(args, cur, "i", col.Name, inc.Adds[i])
			}
		case Gauge:
			if inc.Adds[i] != 0 {
				args = append(args, 1, "g", col.Name+"@"+s.node, inc.Adds[i])
			}
		case Value:
			if inc.Set {
				args = append(args, 1, "s", col.Name, inc.Values[i])
			}
		}
	}
	args[1] = s.windowTTL(maxPeriod).Milliseconds()
	return keys, args
}

// total reads the script's reply as the entry's totals.
func (b *Batcher) total(key []byte, c *goredis.Cmd, alive map[string]bool, nowMs int64) (Total, error) {
	reply, err := c.Slice()
	if err != nil {
		return Total{}, err
	}
	hashes := make([]map[string]string, len(reply))
	for i, r := range reply {
		flat, _ := r.([]any)
		h := make(map[string]string, len(flat)/2)
		for j := 0; j+1 < len(flat); j += 2 {
			k, _ := flat[j].(string)
			v, _ := flat[j+1].(string)
			h[k] = v
		}
		hashes[i] = h
	}
	windows := map[time.Duration][2]map[string]string{}
	next := 1
	for _, col := range b.s.spec.Columns {
		if _, ok := windows[col.Period]; col.Kind == Rate && !ok {
			windows[col.Period] = [2]map[string]string{hashes[next], hashes[next+1]}
			next += 2
		}
	}
	return b.s.totalOf(key, hashes[0], windows, alive, nowMs), nil
}

// liveEdges returns the edges that synced within the live window at the last sync
// (this edge included).
func (s *Syncer) liveEdges() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	alive := make(map[string]bool, len(s.stats.Edges)+1)
	for _, n := range s.stats.Edges {
		alive[n] = true
	}
	alive[s.node] = true
	return alive
}

// parseCount reads a Redis integer field, 0 when missing or negative.
func parseCount(v string) uint64 {
	n, _ := strconv.ParseUint(v, 10, 64)
	return n
}
