package table

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync/atomic"
	"time"
)

// Options sizes a table and sets its clock.
type Options struct {
	// Size is the maximum number of entries.
	Size int
	// Expire is how long an entry lives after its last use; 0 keeps entries
	// until they are evicted.
	Expire time.Duration
	// Now returns the time in milliseconds. Tests pass a fake clock; nil uses
	// CoarseNow, the wall clock in Unix milliseconds (so that rate periods
	// line up across cluster nodes) read from an atomic.
	Now func() int64
	// Shards is the number of independently locked shards (a power of two);
	// 0 chooses from Size.
	Shards int
}

// MaxSize is the largest table size, in entries.
const MaxSize = 1 << 31

// ErrFull is returned when a new entry cannot be created because every
// entry that could be evicted is held by a live connection or request.
var ErrFull = errors.New("stick table full: every entry is in use")

// Table is a stick table: a bounded map from keys to typed counters. All
// methods are safe for concurrent use.
type Table struct {
	schema   *Schema
	now      func() int64
	strKeys  bool
	keyWidth int // bytes of key storage per entry
	mask     uint32
	seed     maphash.Seed
	shards   []shard

	size      atomic.Int64
	expireMs  atomic.Int64
	used      atomic.Int64
	evictions atomic.Uint64
}

// New creates a table with schema s (New initialises it).
func New(s *Schema, o Options) (*Table, error) {
	if err := s.Init(); err != nil {
		return nil, err
	}
	if o.Size < 1 || o.Size > MaxSize {
		return nil, fmt.Errorf("table size %d out of range 1..%d", o.Size, MaxSize)
	}
	if o.Expire < 0 {
		return nil, errors.New("expire must not be negative")
	}
	n := o.Shards
	if n <= 0 {
		// One shard per 4096 entries, at most 64: large tables scale
		// across cores, and each shard's CLOCK sees enough entries to
		// choose well.
		n = 1
		for n < 64 && n*4096 < o.Size {
			n <<= 1
		}
	}
	if n&(n-1) != 0 {
		return nil, errors.New("shards must be a power of two")
	}
	t := &Table{
		schema:  s,
		now:     o.Now,
		strKeys: s.Type == KeyString || s.Type == KeyBinary,
		mask:    uint32(n - 1),
		seed:    maphash.MakeSeed(),
		shards:  make([]shard, n),
	}
	t.keyWidth = 16
	if t.strKeys {
		t.keyWidth = s.KeyLen
	}
	if t.now == nil {
		t.now = CoarseNow
	}
	t.size.Store(int64(o.Size))
	t.expireMs.Store(o.Expire.Milliseconds())
	for i := range t.shards {
		t.shards[i].next = 1
	}
	return t, nil
}

// Schema returns the table's schema.
func (t *Table) Schema() *Schema { return t.schema }

// Now returns the table clock in milliseconds.
func (t *Table) Now() int64 { return t.now() }

// Size returns the maximum number of entries.
func (t *Table) Size() int { return int(t.size.Load()) }

// Len returns the number of entries. (Inserts reserve their slot before
// evicting, so the reservation count can pass the size for an instant while
// concurrent inserts evict; the table itself never holds more than its
// size, and Len never reports more.)
func (t *Table) Len() int { return int(min(t.used.Load(), t.size.Load())) }

// Evictions returns how many entries were evicted to make room.
func (t *Table) Evictions() uint64 { return t.evictions.Load() }

// Expire returns the idle lifetime of entries (0: no expiry).
func (t *Table) Expire() time.Duration { return time.Duration(t.expireMs.Load()) * time.Millisecond }

// SetExpire changes the idle lifetime; it applies from each entry's next use.
func (t *Table) SetExpire(d time.Duration) { t.expireMs.Store(d.Milliseconds()) }

// Resize changes the maximum number of entries, evicting unheld entries as
// a full table does if the table is now over its size.
func (t *Table) Resize(size int) {
	if size < 1 {
		size = 1
	}
	t.size.Store(int64(size))
	for i := range t.shards {
		for t.used.Load() > int64(size) {
			sh := &t.shards[i]
			sh.mu.Lock()
			ok := t.evictOne(sh)
			sh.mu.Unlock()
			if !ok {
				break
			}
		}
	}
}

// Ref is a held entry: it is neither evicted nor expired until released.
// The zero Ref is invalid; operations on a Ref whose entry was deleted
// through the admin API are ignored.
type Ref struct {
	sh  *shard
	idx uint32
	gen uint32
}

// Valid reports whether the Ref came from a successful Acquire.
func (r Ref) Valid() bool { return r.sh != nil }

// Events are the traffic facts applied to an entry in one locked step.
type Events struct {
	Conn    bool   // a connection opened: conn_cnt, conn_rate and conn_cur +1
	ConnEnd bool   // a connection closed: conn_cur −1
	Req     bool   // an HTTP request arrived: http_req_cnt, http_req_rate and req_cur +1
	ReqEnd  bool   // the request finished: req_cur −1
	Status  int    // the response status: 4xx counts http_err, 5xx but 501 and 505 http_fail
	In, Out uint64 // bytes received from and sent to the client
}

// IsHTTPErr reports whether a status counts as an HTTP error (http_err_*):
// every 4xx, as for HAProxy's denied and tarpitted requests.
func IsHTTPErr(status int) bool { return status >= 400 && status <= 499 }

// IsHTTPFail reports whether a status counts as an HTTP failure
// (http_fail_*): 5xx except 501 (not implemented) and 505 (version not
// supported), which are the client's fault.
func IsHTTPFail(status int) bool {
	return status >= 500 && status <= 599 && status != 501 && status != 505
}

func (t *Table) field(k Kind) *Field {
	if i := t.schema.byKind[k]; i >= 0 {
		return &t.schema.Fields[i]
	}
	return nil
}

func (t *Table) add(sh *shard, idx uint32, data []uint32, k Kind, now int64, n uint64) {
	if f := t.field(k); f != nil {
		addField(data, f, 0, now, n)
		if f.delta >= 0 {
			t.markDirty(sh, idx)
		}
	}
}

// open counts the start of a connection or request: its counter and rate
// +1, and its gauge of those in progress +1.
func (t *Table) open(sh *shard, idx uint32, data []uint32, cnt, rate, cur Kind, now int64) {
	t.add(sh, idx, data, cnt, now, 1)
	t.add(sh, idx, data, rate, now, 1)
	if f := t.field(cur); f != nil {
		addField(data, f, 0, now, 1)
	}
}

// close counts the end of a connection or request: its gauge −1.
func (t *Table) close(data []uint32, cur Kind) {
	if f := t.field(cur); f != nil {
		subField(data, f, 0)
	}
}

func (t *Table) apply(sh *shard, idx uint32, ev *Events, now int64) {
	data := t.data(sh, idx)
	if ev.Conn {
		t.open(sh, idx, data, ConnCnt, ConnRate, ConnCur, now)
	}
	if ev.ConnEnd {
		t.close(data, ConnCur)
	}
	if ev.Req {
		t.open(sh, idx, data, HTTPReqCnt, HTTPReqRate, ReqCur, now)
	}
	if ev.ReqEnd {
		t.close(data, ReqCur)
	}
	if ev.Status != 0 {
		if IsHTTPErr(ev.Status) {
			t.add(sh, idx, data, HTTPErrCnt, now, 1)
			t.add(sh, idx, data, HTTPErrRate, now, 1)
		} else if IsHTTPFail(ev.Status) {
			t.add(sh, idx, data, HTTPFailCnt, now, 1)
			t.add(sh, idx, data, HTTPFailRate, now, 1)
		}
	}
	if ev.In != 0 {
		t.add(sh, idx, data, BytesInCnt, now, ev.In)
		t.add(sh, idx, data, BytesInRate, now, ev.In)
	}
	if ev.Out != 0 {
		t.add(sh, idx, data, BytesOutCnt, now, ev.Out)
		t.add(sh, idx, data, BytesOutRate, now, ev.Out)
	}
	if t.schema.Replicated && (ev.Conn || ev.ConnEnd || ev.Req || ev.ReqEnd) {
		t.markDirty(sh, idx) // the gauges are shared too
	}
}

// acquireLocked finds or creates the entry of k (hash h); an expired entry
// that nobody holds starts afresh. A hit marks the entry used for CLOCK.
func (t *Table) acquireLocked(sh *shard, k Key, h uint64, now int64) (uint32, error) {
	idx, ok := t.findHashed(sh, k, h)
	if ok {
		m := sh.meta(idx)
		if !t.expired(m, now) {
			m.refs |= usedBit
			return idx, nil
		}
		t.remove(sh, idx)
	}
	return t.insert(sh, k, h)
}

// Acquire finds or creates the entry of k, applies ev and holds the entry
// until Release. It fails only with ErrFull.
func (t *Table) Acquire(k Key, ev Events) (Ref, error) {
	sh, idx, now, err := t.lockEntry(k)
	if err != nil {
		return Ref{}, err
	}
	t.apply(sh, idx, &ev, now)
	m := sh.meta(idx)
	m.refs++
	t.touch(sh, idx, m, now)
	r := Ref{sh: sh, idx: idx, gen: m.gen}
	sh.mu.Unlock()
	return r, nil
}

// lockEntry locks the shard of k and finds or creates its entry; when the
// shard has nothing to evict for a new key, it frees an entry elsewhere and
// tries once more. On success the shard stays locked.
func (t *Table) lockEntry(k Key) (*shard, uint32, int64, error) {
	sh, h := t.locate(k)
	now := t.now()
	sh.mu.Lock()
	idx, err := t.acquireLocked(sh, k, h, now)
	if err == nil {
		return sh, idx, now, nil
	}
	sh.mu.Unlock()
	if !t.evictElsewhere(sh) {
		return nil, 0, 0, err
	}
	sh.mu.Lock()
	if idx, err = t.acquireLocked(sh, k, h, now); err != nil {
		sh.mu.Unlock()
		return nil, 0, 0, err
	}
	return sh, idx, now, nil
}

// evictElsewhere frees one entry in any other shard when the shard of a new
// key has nothing to evict.
func (t *Table) evictElsewhere(skip *shard) bool {
	for i := range t.shards {
		sh := &t.shards[i]
		if sh == skip {
			continue
		}
		sh.mu.Lock()
		ok := t.evictOne(sh)
		sh.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// lockRef locks the shard of r and reports whether r's entry still exists.
func (t *Table) lockRef(r Ref) bool {
	if r.sh == nil {
		return false
	}
	r.sh.mu.Lock()
	if r.sh.meta(r.idx).gen != r.gen {
		r.sh.mu.Unlock()
		return false
	}
	return true
}

// Update applies ev to a held entry.
func (t *Table) Update(r Ref, ev Events) {
	if !t.lockRef(r) {
		return
	}
	t.apply(r.sh, r.idx, &ev, t.now())
	r.sh.mu.Unlock()
}

// Release applies ev, refreshes the entry's expiry and stops holding it.
func (t *Table) Release(r Ref, ev Events) {
	if !t.lockRef(r) {
		return
	}
	now := t.now()
	t.apply(r.sh, r.idx, &ev, now)
	m := r.sh.meta(r.idx)
	if m.holders() > 0 {
		m.refs--
	}
	t.touch(r.sh, r.idx, m, now)
	r.sh.mu.Unlock()
}

// Key returns the key of a held entry.
func (t *Table) Key(r Ref) (Key, bool) {
	if !t.lockRef(r) {
		return Key{}, false
	}
	k := t.keyAt(r.sh, r.idx)
	r.sh.mu.Unlock()
	return k, true
}

// Get reads a column of a held entry.
func (t *Table) Get(r Ref, c Column) (uint64, bool) {
	if !t.lockRef(r) {
		return 0, false
	}
	v := getField(t.data(r.sh, r.idx), &t.schema.Fields[c.field], c.elem, t.now())
	r.sh.mu.Unlock()
	return v, true
}

// Lookup reads a column of the entry of k without creating, holding or
// refreshing it. Missing and expired entries report false.
func (t *Table) Lookup(k Key, c Column) (uint64, bool) {
	sh, h := t.locate(k)
	now := t.now()
	sh.mu.Lock()
	idx, ok := t.findHashed(sh, k, h)
	if !ok || t.expired(sh.meta(idx), now) {
		sh.mu.Unlock()
		return 0, false
	}
	v := getField(t.data(sh, idx), &t.schema.Fields[c.field], c.elem, now)
	sh.mu.Unlock()
	return v, true
}

// Banned reports whether a held entry's ban is in force.
func (t *Table) Banned(r Ref) bool {
	f := t.field(Ban)
	if f == nil || !t.lockRef(r) {
		return false
	}
	v := getField(t.data(r.sh, r.idx), f, 0, t.now())
	r.sh.mu.Unlock()
	return v > 0
}

// LookupBanned reports whether the entry of k exists and its ban is in force.
func (t *Table) LookupBanned(k Key) bool {
	f := t.field(Ban)
	if f == nil {
		return false
	}
	v, ok := t.Lookup(k, Column{field: int(t.schema.byKind[Ban])})
	return ok && v > 0
}

func (t *Table) markDirty(sh *shard, idx uint32) {
	m := sh.meta(idx)
	if m.refs&dirtyBit == 0 {
		m.refs |= dirtyBit
		sh.dirty = append(sh.dirty, idx)
	}
}

// Add adds n to a column of a held entry: a gpc element (and the gpc_rate
// element of the same index when stored, as sc-inc-gpc does), a counter or
// a rate.
func (t *Table) Add(r Ref, c Column, n uint64) {
	if !t.lockRef(r) {
		return
	}
	t.addColumn(r.sh, r.idx, c, n, t.now())
	r.sh.mu.Unlock()
}

func (t *Table) addColumn(sh *shard, idx uint32, c Column, n uint64, now int64) {
	data := t.data(sh, idx)
	f := &t.schema.Fields[c.field]
	addField(data, f, c.elem, now, n)
	if f.Kind == GPC {
		if rf := t.field(GPCRate); rf != nil && c.elem < rf.Count {
			addField(data, rf, c.elem, now, n)
		}
	}
	if t.schema.Replicated {
		t.markDirty(sh, idx)
	}
}

// Set stores v in a column of a held entry (for ban, v is milliseconds from
// now; 0 lifts the ban).
func (t *Table) Set(r Ref, c Column, v uint64) {
	if !t.lockRef(r) {
		return
	}
	t.setColumn(r.sh, r.idx, c, v, t.now())
	r.sh.mu.Unlock()
}

func (t *Table) setColumn(sh *shard, idx uint32, c Column, v uint64, now int64) {
	f := &t.schema.Fields[c.field]
	data := t.data(sh, idx)
	if f.delta >= 0 {
		// An explicit set replaces the value; what it changes is the delta.
		old := getField(data, f, c.elem, now)
		setField(data, f, c.elem, now, v)
		if v > old {
			addDelta(data, f, c.elem, v-old)
		}
	} else {
		setField(data, f, c.elem, now, v)
		if t.schema.Replicated {
			sh.meta(idx).refs |= setBit
		}
	}
	if t.schema.Replicated {
		t.markDirty(sh, idx)
	}
}

// BanColumn returns the column of the ban data type.
func (t *Table) BanColumn() (Column, bool) {
	i := t.schema.byKind[Ban]
	return Column{Name: "ban", field: int(i)}, i >= 0
}

// Delete removes the entry of k, held or not (holders' later updates are
// ignored). It reports whether the entry existed.
func (t *Table) Delete(k Key) bool {
	sh, h := t.locate(k)
	sh.mu.Lock()
	idx, ok := t.findHashed(sh, k, h)
	if ok {
		t.remove(sh, idx)
	}
	sh.mu.Unlock()
	return ok
}

// Write is one column assignment for Put.
type Write struct {
	Column Column
	Value  uint64
}

// Put creates or refreshes the entry of k and stores the given values.
func (t *Table) Put(k Key, writes []Write) error {
	sh, idx, now, err := t.lockEntry(k)
	if err != nil {
		return err
	}
	for _, w := range writes {
		t.setColumn(sh, idx, w.Column, w.Value, now)
	}
	t.touch(sh, idx, sh.meta(idx), now)
	sh.mu.Unlock()
	return nil
}

// Entry is a snapshot of one entry for listings.
type Entry struct {
	Key       Key
	ExpiresIn time.Duration // 0 when the table has no expiry
	Holders   int           // live connections and requests holding it
	Values    []uint64      // one per Schema.Columns(); ban in milliseconds left
	// Own is this node's part of Values in a replicated schema: its own
	// counts and rates of summable columns, its local gauges; nil otherwise.
	// OwnOK tells which columns have one.
	Own   []uint64
	OwnOK []bool
}

// Snapshot returns a snapshot of the entry of k.
func (t *Table) Snapshot(k Key) (Entry, bool) {
	sh, h := t.locate(k)
	now := t.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	idx, ok := t.findHashed(sh, k, h)
	if !ok || t.expired(sh.meta(idx), now) {
		return Entry{}, false
	}
	return t.snapshot(sh, idx, now), true
}

func (t *Table) snapshot(sh *shard, idx uint32, now int64) Entry {
	m := sh.meta(idx)
	e := Entry{Key: t.keyAt(sh, idx), Holders: int(m.holders())}
	if m.exp != 0 && m.holders() == 0 {
		e.ExpiresIn = time.Duration(max(m.exp-now, 0)) * time.Millisecond
	} else if m.exp != 0 {
		e.ExpiresIn = t.Expire()
	}
	data := t.data(sh, idx)
	e.Values = make([]uint64, len(t.schema.columns))
	if t.schema.Replicated {
		e.Own, e.OwnOK = make([]uint64, len(t.schema.columns)), make([]bool, len(t.schema.columns))
	}
	for i, c := range t.schema.columns {
		f := &t.schema.Fields[c.field]
		e.Values[i] = getField(data, f, c.elem, now)
		if e.Own != nil {
			e.Own[i], e.OwnOK[i] = getOwn(data, f, c.elem, now)
		}
	}
	return e
}

// Range calls fn with a snapshot of every live entry, one shard at a time,
// until fn returns false. fn runs without any lock held.
func (t *Table) Range(fn func(Entry) bool) {
	var buf []Entry
	for i := range t.shards {
		sh := &t.shards[i]
		now := t.now()
		buf = buf[:0]
		sh.mu.Lock()
		for idx := uint32(1); idx < sh.next; idx++ {
			if m := sh.meta(idx); m.live() && !t.expired(m, now) {
				buf = append(buf, t.snapshot(sh, idx, now))
			}
		}
		sh.mu.Unlock()
		for _, e := range buf {
			if !fn(e) {
				return
			}
		}
	}
}

// Clear removes every entry.
func (t *Table) Clear() {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for idx := uint32(1); idx < sh.next; idx++ {
			if sh.meta(idx).live() {
				t.remove(sh, idx)
			}
		}
		sh.mu.Unlock()
	}
}
