package redis

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// How a shared table lives in Redis (prefix rampart:<table>:):
//
//	rampart:<table>:{<key>}              hash: one field per counter column
//	                                     (summed with HINCRBY by every edge),
//	                                     per gpt/server_id/ban column (last
//	                                     writer wins; ban is a Unix-ms
//	                                     deadline), "<gauge>@<node>" per edge
//	                                     holding a gauge, "#<node>" the last
//	                                     batch of each edge; expires with the
//	                                     table's expire.
//	rampart:<table>:{<key>}:w<p>:<n>     hash: the counts of the rate columns
//	                                     of period p ms in window n (Unix ms /
//	                                     p); expires after two periods.
//	rampart:<table>:sets                 stream of keys whose gpt, server_id or
//	                                     ban was set (capped): every edge reads
//	                                     it each sync and pulls those keys.
//	rampart:edges                        sorted set: node → last sync (Unix ms).
//
// The {<key>} hash tag keeps an entry's keys in one Redis Cluster slot, so a
// push is one atomic script per key. A push carries the edge's batch
// number: a batch that timed out after Redis applied it is recognised and
// skipped when it is sent again, so nothing is counted twice.

// ColumnKind says how a column combines across edges.
type ColumnKind uint8

// The column kinds.
const (
	Counter ColumnKind = iota // summed: *_cnt, gpc
	Rate                      // summed per window of Period: *_rate
	Gauge                     // summed over live edges: conn_cur, req_cur
	Value                     // last writer wins: gpt, server_id, ban
)

// Column is one shared value of a table.
type Column struct {
	Name   string
	Kind   ColumnKind
	Period time.Duration // rates only
}

// TableSpec describes a shared table.
type TableSpec struct {
	Name    string
	Columns []Column
	// Expire is how long the table keeps an idle entry; Redis keeps it as
	// long (a day when 0).
	Expire time.Duration
	// Strict tables send their increments and gauge changes through a
	// Batcher; Sync then only removes this edge's gauge of a key where it
	// holds none (repairing a release that could not reach Redis).
	Strict bool
}

// Change is what one entry counted locally since the previous sync.
type Change struct {
	Key []byte
	// Adds are the increments of Counter and Rate columns, by column.
	Adds []uint64
	// Values are this edge's gauges and, when Set, its Value columns.
	Values []uint64
	// Set reports that a Value column was written on this edge.
	Set bool
}

// Total is the cluster's view of one entry, by column: a Counter's sum, a
// Rate's two-window estimate, the sum of the other live edges' Gauge, a
// Value column's shared value.
type Total struct {
	Key    []byte
	Values []uint64
}

// Stats are a syncer's running figures.
type Stats struct {
	Syncs, Errors, RoundTrips uint64
	Lost                      uint64 // deltas dropped after too many unconfirmed batches
	Connected                 bool
	LastSync                  time.Time // last successful sync
	Edges                     []string  // live edges at the last sync
}

// maxInflight bounds the batches kept for a resend while Redis does not
// confirm them; older ones are dropped and counted in Stats.Lost.
const maxInflight = 64

// Syncer runs the sync protocol of one shared table for one edge. Sync is
// called from one goroutine; Stats from any.
type Syncer struct {
	client goredis.UniversalClient
	node   string
	spec   TableSpec
	every  time.Duration
	prefix string
	script *goredis.Script
	loaded bool // the push script is known to Redis

	unsent   map[string]*pending
	inflight []*batch
	seq      int64
	streamID string
	announce [][]byte            // keys announced by other edges, pulled next
	watch    map[string]*watched // keys pulled while they change

	mu    sync.Mutex
	stats Stats
	rt    atomic.Uint64
}

// watchFor is how long a key keeps being pulled after its last change (local
// or cluster-wide), so that every edge ends with the cluster's totals of the
// keys it has seen, not the totals of its own last request.
const watchFor = 3 * time.Second

// maxWatch bounds the keys pulled for their recent changes.
const maxWatch = 100_000

// watched is a key pulled every sync: its last totals and when they or the
// local entry last changed (Unix ms).
type watched struct {
	key     []byte
	values  []uint64
	changed int64
}

// pending is the not yet sent part of one entry.
type pending struct {
	key    []byte
	adds   []uint64 // counters; rates in the current window
	win    []int64  // rates: window of adds
	prev   []uint64 // rates: the previous window's adds
	values []uint64
	gauge  bool
	set    bool
}

// batch is a set of entry pushes with one batch number.
type batch struct {
	seq     int64
	entries []*pending
	// unsure: a push of the batch timed out, so Redis may have applied
	// it; the batch is only ever resent with its number, never refolded.
	unsure bool
}

// push is one entry's push script in a round.
type push struct {
	bt  *batch
	e   *pending
	cmd *goredis.Cmd // nil when the round ended before sending it
}

// pipelineKeys is how many entries (pushed or pulled) one pipeline carries
// at most: a few milliseconds of Redis work, well within a timeout.
const pipelineKeys = 256

// NewSyncer returns the syncer of spec for node, syncing every interval.
func NewSyncer(client goredis.UniversalClient, node string, spec TableSpec, every time.Duration) *Syncer {
	return &Syncer{
		client: client, node: node, spec: spec, every: every,
		prefix: "rampart:" + spec.Name + ":",
		script: goredis.NewScript(pushScript),
		unsent: map[string]*pending{},
		watch:  map[string]*watched{},
	}
}

// pushScript applies one entry's batch unless the edge's batch number shows
// it was applied already. KEYS[1] is the entry's hash, KEYS[2..] its rate
// windows; ARGV: seq field, seq, entry ttl ms, window ttl ms, then groups of
// (key index, op i|s|d, field, value).
const pushScript = `
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then return 0 end
for i = 5, #ARGV, 4 do
  local k = KEYS[tonumber(ARGV[i])]
  local op = ARGV[i+1]
  if op == 'i' then redis.call('HINCRBY', k, ARGV[i+2], ARGV[i+3])
  elseif op == 's' then redis.call('HSET', k, ARGV[i+2], ARGV[i+3])
  else redis.call('HDEL', k, ARGV[i+2]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1
`

func (s *Syncer) entryKey(k []byte) string { return s.prefix + "{" + string(k) + "}" }

func (s *Syncer) windowKey(k []byte, p time.Duration, w int64) string {
	return s.entryKey(k) + ":w" + strconv.FormatInt(p.Milliseconds(), 10) + ":" + strconv.FormatInt(w, 10)
}

func (s *Syncer) entryTTL() time.Duration {
	if s.spec.Expire > 0 {
		return s.spec.Expire
	}
	return 24 * time.Hour
}

// fold adds a change to the unsent part of its entry.
func (s *Syncer) fold(c Change, nowMs int64) {
	p := s.unsent[string(c.Key)]
	n := len(s.spec.Columns)
	if p == nil {
		p = &pending{key: c.Key, adds: make([]uint64, n), win: make([]int64, n), prev: make([]uint64, n), values: make([]uint64, n)}
		s.unsent[string(c.Key)] = p
	}
	for i, col := range s.spec.Columns {
		switch col.Kind {
		case Counter:
			p.adds[i] += c.Adds[i]
		case Rate:
			if c.Adds[i] == 0 {
				continue
			}
			w := nowMs / col.Period.Milliseconds()
			switch {
			case p.adds[i] == 0 || p.win[i] == w:
			case p.win[i] == w-1:
				p.prev[i] = p.adds[i]
				p.adds[i] = 0
			default: // two windows or more old: it no longer counts
				p.prev[i], p.adds[i] = 0, 0
			}
			p.win[i] = w
			p.adds[i] += c.Adds[i]
		case Gauge:
			p.values[i], p.gauge = c.Values[i], true
		case Value:
			if c.Set {
				p.values[i] = c.Values[i]
			}
		}
	}
	p.set = p.set || c.Set
}

// refold puts a batch that Redis certainly did not apply back into unsent.
func (s *Syncer) refold(b *batch, nowMs int64) {
	for _, e := range b.entries {
		cur := s.unsent[string(e.key)]
		if cur == nil {
			s.unsent[string(e.key)] = e
			continue
		}
		// cur is newer: its gauges and values win, counts add up.
		for i, col := range s.spec.Columns {
			switch col.Kind {
			case Counter:
				cur.adds[i] += e.adds[i]
			case Rate:
				w := nowMs / col.Period.Milliseconds()
				if e.adds[i] != 0 && e.win[i] == cur.win[i] {
					cur.adds[i] += e.adds[i]
					cur.prev[i] += e.prev[i]
				} else if e.adds[i] != 0 && e.win[i] == cur.win[i]-1 {
					cur.prev[i] += e.adds[i]
				} else if cur.adds[i] == 0 && e.win[i] >= w-1 {
					cur.adds[i], cur.prev[i], cur.win[i] = e.adds[i], e.prev[i], e.win[i]
				}
			case Gauge:
				if !cur.gauge {
					cur.values[i] = e.values[i]
				}
			case Value:
				if !cur.set {
					cur.values[i] = e.values[i]
				}
			}
		}
		cur.gauge = cur.gauge || e.gauge
		cur.set = cur.set || e.set
	}
}

// pushArgs builds the script call of one entry.
func (s *Syncer) pushArgs(b *batch, e *pending) ([]string, []any) {
	keys := []string{s.entryKey(e.key)}
	args := []any{"#" + s.node, b.seq, s.entryTTL().Milliseconds(), 0}
	var maxPeriod time.Duration
	windows := map[string]int{}
	win := func(p time.Duration, w int64) int {
		k := s.windowKey(e.key, p, w)
		if i, ok := windows[k]; ok {
			return i
		}
		keys = append(keys, k)
		windows[k] = len(keys)
		return len(keys)
	}
	for i, col := range s.spec.Columns {
		switch col.Kind {
		case Counter:
			if e.adds[i] != 0 {
				args = append(args, 1, "i", col.Name, e.adds[i])
			}
		case Rate:
			maxPeriod = max(maxPeriod, col.Period)
			if e.adds[i] != 0 {
				args = append(args, win(col.Period, e.win[i]), "i", col.Name, e.adds[i])
			}
			if e.prev[i] != 0 {
				args = append(args, win(col.Period, e.win[i]-1), "i", col.Name, e.prev[i])
			}
		case Gauge:
			if !e.gauge {
				continue
			}
			field := col.Name + "@" + s.node
			if s.spec.Strict && e.values[i] != 0 {
				continue // the Batcher keeps it
			}
			if e.values[i] == 0 {
				args = append(args, 1, "d", field, 0)
			} else {
				args = append(args, 1, "s", field, e.values[i])
			}
		case Value:
			if e.set {
				args = append(args, 1, "s", col.Name, e.values[i])
			}
		}
	}
	args[3] = s.windowTTL(maxPeriod).Milliseconds()
	return keys, args
}

// liveWindow is how recently an edge must have synced to count as live
// (its gauges in the sums, its id in the edge list): two and a half syncs.
// Every round (push and pull) refreshes an edge's heartbeat, so a live edge
// is at most about one sync old, and a dead one leaves at the first round
// past the window: within 3 × sync of its last heartbeat, rounds being at
// most half a sync apart.
func (s *Syncer) liveWindow() time.Duration { return 5 * s.every / 2 }

// windowTTL is how long rate windows live: two of the longest period, two
// syncs and a second.
func (s *Syncer) windowTTL(maxPeriod time.Duration) time.Duration {
	return 2*maxPeriod + 2*s.every + time.Second
}

// Sync pushes the changes (and whatever earlier syncs could not push),
// then pulls the cluster's totals of the changed keys, of the keys in
// toPull, of the keys whose totals changed within the last 3 s (up to 100k)
// and of keys whose values other edges set. It is one pipelined round trip
// per pipelineKeys entries (one more when other edges set values), sent
// while the round is within half a sync; what it had no time for waits for
// the next Sync. On error the changes are kept for the next Sync.
func (s *Syncer) Sync(ctx context.Context, changes []Change, toPull [][]byte) ([]Total, error) {
	now := time.Now()
	nowMs := now.UnixMilli()
	for _, c := range changes {
		s.fold(c, nowMs)
	}
	if !s.loaded {
		err := s.script.Load(ctx, s.client).Err()
		s.rt.Add(1)
		if err != nil {
			s.record(false, nil, now)
			return nil, err
		}
		s.loaded = true
	}
	b := &batch{seq: max(s.seq+1, now.UnixMicro())}
	s.seq = b.seq
	for _, p := range s.unsent {
		b.entries = append(b.entries, p)
	}
	clear(s.unsent)
	keys := map[string][]byte{}
	for _, e := range b.entries {
		keys[string(e.key)] = e.key
		if w := s.watch[string(e.key)]; w != nil {
			w.changed = nowMs
		}
	}
	for _, k := range toPull {
		keys[string(k)] = k
	}
	for k, w := range s.watch {
		if nowMs-w.changed > watchFor.Milliseconds() {
			delete(s.watch, k)
			continue
		}
		keys[k] = w.key
	}
	for _, k := range s.announce {
		keys[string(k)] = k
	}
	s.announce = s.announce[:0]
	if s.streamID == "" {
		s.streamID = strconv.FormatInt(nowMs, 10) + "-0"
	}

	// The round goes out in pipelines of at most pipelineKeys entries, in
	// order (a batch's pushes before any later batch's), so that no pipeline
	// outlasts the per-operation timeout however many keys changed. The
	// first pipeline always goes; the next ones only while the round is
	// within its budget (half a sync, so that the push and pull rounds of one
	// sync fit in it). What was not sent waits for the next round.
	deadline := now.Add(s.every / 2)
	dead := nowMs - s.liveWindow().Milliseconds()
	streamKey := s.prefix + "sets"
	batches := append(s.inflight, b)
	var pushes []push
	for _, bt := range batches {
		for _, e := range bt.entries {
			pushes = append(pushes, push{bt: bt, e: e})
		}
	}
	pullKeys := make([][]byte, 0, len(keys))
	for _, k := range keys {
		pullKeys = append(pullKeys, k)
	}
	var (
		edgesCmd *goredis.StringSliceCmd
		xread    *goredis.XStreamSliceCmd
		pulls    []pull
		err      error
	)
	sentPushes, sentPulls := 0, 0
	for first := true; first || (sentPushes < len(pushes) || sentPulls < len(pullKeys)) && time.Now().Before(deadline); first = false {
		pipe := s.client.Pipeline()
		if first {
			pipe.ZAdd(ctx, "rampart:edges", goredis.Z{Score: float64(nowMs), Member: s.node})
			pipe.ZRemRangeByScore(ctx, "rampart:edges", "-inf", "("+strconv.FormatInt(dead, 10))
			edgesCmd = pipe.ZRange(ctx, "rampart:edges", 0, -1)
			xread = pipe.XRead(ctx, &goredis.XReadArgs{Streams: []string{streamKey, s.streamID}, Count: 10000, Block: -1})
		}
		room := pipelineKeys
		for ; room > 0 && sentPushes < len(pushes); room-- {
			p := &pushes[sentPushes]
			k, a := s.pushArgs(p.bt, p.e)
			p.cmd = s.script.EvalSha(ctx, pipe, k, a...)
			if p.bt == b && p.e.set {
				pipe.XAdd(ctx, &goredis.XAddArgs{Stream: streamKey, MaxLen: 10000, Approx: true, Values: []any{"k", p.e.key}})
			}
			sentPushes++
		}
		chunk := pullKeys[sentPulls:min(len(pullKeys), sentPulls+room)]
		pulls = append(pulls, s.queuePulls(ctx, pipe, chunk, nowMs)...)
		sentPulls += len(chunk)
		err = execPipe(ctx, pipe)
		s.rt.Add(1)
		if err != nil {
			break
		}
	}

	// Keep what Redis did not certainly apply: a batch some push of which
	// may have been applied (a timeout) is resent as it is, with its batch
	// number, so Redis skips what it already has; one certainly not applied
	// (not sent, refused, script unknown) is folded into the next batch.
	s.inflight = s.inflight[:0]
	reload := false
	left := make(map[*batch][]*pending, len(batches))
	for _, p := range pushes {
		if p.cmd != nil {
			e := p.cmd.Err()
			if e == nil {
				continue // applied
			}
			if strings.HasPrefix(e.Error(), "NOSCRIPT") {
				reload = true
			} else if !notSent(e) {
				p.bt.unsure = true
			}
		}
		left[p.bt] = append(left[p.bt], p.e)
	}
	for _, bt := range batches {
		bt.entries = left[bt]
		switch {
		case len(bt.entries) == 0:
		case bt.unsure:
			s.inflight = append(s.inflight, bt)
		default:
			s.refold(bt, nowMs)
		}
	}
	if len(s.inflight) > maxInflight {
		drop := len(s.inflight) - maxInflight
		s.mu.Lock()
		for _, bt := range s.inflight[:drop] {
			s.stats.Lost += uint64(len(bt.entries))
		}
		s.mu.Unlock()
		s.inflight = append(s.inflight[:0], s.inflight[drop:]...)
	}
	if reload {
		// Redis restarted: load the script before the next push.
		s.loaded = false
	}
	var later [][]byte // keys to pull that the round had no time for
	for _, k := range pullKeys[sentPulls:] {
		if _, watched := s.watch[string(k)]; !watched {
			later = append(later, k)
		}
	}
	if err != nil {
		s.record(false, nil, now)
		return nil, err
	}
	if msgs, e := xread.Result(); e == nil {
		for _, st := range msgs {
			for _, m := range st.Messages {
				s.streamID = m.ID
				if k, ok := m.Values["k"].(string); ok {
					s.announce = append(s.announce, []byte(k))
				}
			}
		}
	}
	live := edgesCmd.Val()
	totals := s.parsePulls(pulls, live, nowMs)
	if len(s.announce) > 0 {
		// Other edges set values: pull those keys now rather than next time,
		// so that a ban reaches this edge within two syncs.
		var more [][]byte
		for _, k := range s.announce {
			if _, done := keys[string(k)]; !done {
				more = append(more, k)
			}
		}
		s.announce = s.announce[:0]
		for len(more) > 0 && time.Now().Before(deadline) {
			chunk := more[:min(len(more), pipelineKeys)]
			pipe := s.client.Pipeline()
			pulls := s.queuePulls(ctx, pipe, chunk, nowMs)
			err = execPipe(ctx, pipe)
			s.rt.Add(1)
			if err != nil {
				break
			}
			totals = append(totals, s.parsePulls(pulls, live, nowMs)...)
			more = more[len(chunk):]
		}
		later = append(later, more...)
	}
	s.announce = append(s.announce, later...)
	s.record(true, live, now)
	return totals, nil
}

// execPipe runs a pipeline and returns the first error other than an empty
// read.
func execPipe(ctx context.Context, pipe goredis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && !errors.Is(e, goredis.Nil) {
			return e
		}
	}
	return nil
}

// watchTotal keeps pulling a key while its totals change or other edges
// hold gauges on it (so that a dead edge's share leaves); a key pushed this
// round counts as changed.
func (s *Syncer) watchTotal(t Total, nowMs int64) {
	w := s.watch[string(t.Key)]
	for i, col := range s.spec.Columns {
		if col.Kind == Gauge && t.Values[i] > 0 && w != nil {
			w.values, w.changed = t.Values, nowMs
			return
		}
	}
	if w == nil && len(s.watch) >= maxWatch {
		return
	}
	if w == nil {
		s.watch[string(t.Key)] = &watched{key: t.Key, values: t.Values, changed: nowMs}
		return
	}
	for i, v := range t.Values {
		if w.values[i] != v {
			w.values, w.changed = t.Values, nowMs
			return
		}
	}
}

// notSent reports whether err means the command never reached Redis.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" || errors.Is(err, goredis.ErrPoolTimeout)
}

// pull is the queued reads of one key.
type pull struct {
	key     []byte
	entry   *goredis.MapStringStringCmd
	windows map[time.Duration][2]*goredis.MapStringStringCmd
}

func (s *Syncer) queuePulls(ctx context.Context, pipe goredis.Pipeliner, keys [][]byte, nowMs int64) []pull {
	out := make([]pull, 0, len(keys))
	for _, k := range keys {
		p := pull{key: k, entry: pipe.HGetAll(ctx, s.entryKey(k))}
		for _, col := range s.spec.Columns {
			if col.Kind != Rate {
				continue
			}
			if p.windows == nil {
				p.windows = map[time.Duration][2]*goredis.MapStringStringCmd{}
			}
			if _, ok := p.windows[col.Period]; ok {
				continue
			}
			w := nowMs / col.Period.Milliseconds()
			p.windows[col.Period] = [2]*goredis.MapStringStringCmd{
				pipe.HGetAll(ctx, s.windowKey(k, col.Period, w)),
				pipe.HGetAll(ctx, s.windowKey(k, col.Period, w-1)),
			}
		}
		out = append(out, p)
	}
	return out
}

func (s *Syncer) parsePulls(pulls []pull, live []string, nowMs int64) []Total {
	alive := make(map[string]bool, len(live))
	for _, n := range live {
		alive[n] = true
	}
	out := make([]Total, 0, len(pulls))
	for _, p := range pulls {
		h := p.entry.Val()
		if len(h) == 0 {
			continue // unknown to Redis (expired, or Redis lost it): keep the local view
		}
		windows := make(map[time.Duration][2]map[string]string, len(p.windows))
		for period, ws := range p.windows {
			windows[period] = [2]map[string]string{ws[0].Val(), ws[1].Val()}
		}
		t := s.totalOf(p.key, h, windows, alive, nowMs)
		s.watchTotal(t, nowMs)
		out = append(out, t)
	}
	return out
}

// totalOf reads an entry's totals from its hash h and the current and
// previous windows of each rate period: a Gauge is the sum of the other
// live edges.
func (s *Syncer) totalOf(key []byte, h map[string]string, windows map[time.Duration][2]map[string]string, alive map[string]bool, nowMs int64) Total {
	t := Total{Key: key, Values: make([]uint64, len(s.spec.Columns))}
	for i, col := range s.spec.Columns {
		switch col.Kind {
		case Counter, Value:
			t.Values[i] = parseCount(h[col.Name])
		case Rate:
			ws := windows[col.Period]
			cur, prev := parseCount(ws[0][col.Name]), parseCount(ws[1][col.Name])
			per := col.Period.Milliseconds()
			t.Values[i] = cur + prev*uint64(per-nowMs%per)/uint64(per)
		case Gauge:
			prefix := col.Name + "@"
			for f, v := range h {
				node, ok := strings.CutPrefix(f, prefix)
				if !ok || node == s.node || !alive[node] {
					continue
				}
				t.Values[i] += parseCount(v)
			}
		}
	}
	return t
}

func (s *Syncer) record(ok bool, live []string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Syncs++
	s.stats.Connected = ok
	if !ok {
		s.stats.Errors++
		return
	}
	s.stats.LastSync = now
	s.stats.Edges = live
}

// Stats returns the syncer's figures.
func (s *Syncer) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.RoundTrips = s.rt.Load()
	st.Edges = append([]string(nil), s.stats.Edges...)
	return st
}
