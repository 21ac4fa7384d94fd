package table

// Replication support for cluster mode. A table whose schema has Replicated
// set keeps, per entry, the increments of every summable column (counters,
// rates, gpc) since the last sync, the other nodes' share of its gauges
// (conn_cur, req_cur), and a flag telling whether a last-writer-wins value
// (gpt, server_id, ban) was set locally. A sync loop calls CollectDeltas,
// adds the deltas to the shared totals, and hands the totals it reads back
// to Merge: the entry then reads as the cluster total plus whatever was
// counted locally since the collect, and its gauges as the local value
// plus the other nodes' sum.

// Delta is what changed in one entry since the previous CollectDeltas.
type Delta struct {
	Key Key
	// Adds holds, per Schema.Columns() index, the increments of summable
	// columns since the last collect (0 for other columns).
	Adds []uint64
	// Values holds, per column, this node's current value: a gauge without
	// the other nodes' share, gpt, server_id and ban (in milliseconds left)
	// as they read.
	Values []uint64
	// Set reports that a gpt, server_id or ban value was set on this node
	// since the last collect, so Values carries news for the cluster.
	Set bool
}

// CollectDeltas calls fn for every entry changed since the previous call and
// resets those entries' deltas. fn runs without any lock held. On a table
// without replication it does nothing.
func (t *Table) CollectDeltas(fn func(Delta)) {
	if !t.schema.Replicated {
		return
	}
	var buf []Delta
	cols := t.schema.columns
	for i := range t.shards {
		sh := &t.shards[i]
		buf = buf[:0]
		now := t.now()
		sh.mu.Lock()
		for _, idx := range sh.dirty {
			m := sh.meta(idx)
			if m.refs&dirtyBit == 0 {
				continue // freed (and maybe reused clean) since it was marked
			}
			d := Delta{Key: t.keyAt(sh, idx), Adds: make([]uint64, len(cols)), Values: make([]uint64, len(cols)), Set: m.refs&setBit != 0}
			m.refs &^= dirtyBit | setBit
			data := t.data(sh, idx)
			for ci, c := range cols {
				f := &t.schema.Fields[c.field]
				if f.delta >= 0 {
					d.Adds[ci] = takeDelta(data, f, c.elem)
				}
				d.Values[ci] = getLocal(data, f, c.elem, now)
			}
			buf = append(buf, d)
		}
		sh.dirty = sh.dirty[:0]
		sh.mu.Unlock()
		for _, d := range buf {
			fn(d)
		}
	}
}

// Pending returns the not yet collected delta of a summable column of the
// entry of k (0 when there is none).
func (t *Table) Pending(k Key, c Column) uint64 {
	f := &t.schema.Fields[c.field]
	if f.delta < 0 {
		return 0
	}
	sh := t.shardOf(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	idx, ok := t.find(sh, k)
	if !ok {
		return 0
	}
	return peekDelta(t.data(sh, idx), f, c.elem)
}

// Remote is a value read from the cluster for one column: the summed total
// of a summable column, the other nodes' sum of a gauge, or the shared value
// of gpt, server_id and ban (milliseconds left).
type Remote = Write

// Merge applies cluster values to the entry of k, creating it if needed. A
// summable column becomes the cluster total plus the local delta not yet
// collected; a rate reads that sum for the rest of the current period; a
// gauge reads its local value plus the remote one. A gpt, server_id or ban
// value set locally since the last collect is kept: this node's write is
// the later one, and the next sync pushes it.
func (t *Table) Merge(k Key, remote []Remote) error {
	sh, idx, now, err := t.lockEntry(k)
	if err != nil {
		return err
	}
	defer sh.mu.Unlock()
	m := sh.meta(idx)
	t.mergeLocked(sh, idx, remote, now)
	t.touch(sh, idx, m, now)
	return nil
}

func (t *Table) mergeLocked(sh *shard, idx uint32, remote []Remote, now int64) {
	data := t.data(sh, idx)
	m := sh.meta(idx)
	for _, r := range remote {
		f := &t.schema.Fields[r.Column.field]
		switch {
		case f.remote >= 0:
			data[f.remote+r.Column.elem] = uint32(min(r.Value, 1<<32-1))
		case f.Kind == ConnCur || f.Kind == ReqCur:
			continue
		case f.delta >= 0:
			setField(data, f, r.Column.elem, now, satAdd64(r.Value, peekDelta(data, f, r.Column.elem)))
		case m.refs&setBit != 0:
			continue
		default:
			setField(data, f, r.Column.elem, now, r.Value)
		}
	}
}

// AcquireMerged is Acquire for an event the cluster already counted (a
// strict table's increment applied in Redis): the entry takes the cluster
// values in remote as Merge does, only ev's gauges (and this node's own
// counts) count locally, and nothing is recorded for the next sync. It also returns the entry's values
// (by column, as Entry.Values) right after the merge, under the same lock:
// the caller's own view, exact even while other holders merge later totals.
func (t *Table) AcquireMerged(k Key, ev Events, remote []Remote) (Ref, []uint64, error) {
	sh, idx, now, err := t.lockEntry(k)
	if err != nil {
		return Ref{}, nil, err
	}
	defer sh.mu.Unlock()
	data := t.data(sh, idx)
	for _, g := range [...]struct {
		on                 bool
		gauge, count, rate Kind
	}{{ev.Conn, ConnCur, ConnCnt, ConnRate}, {ev.Req, ReqCur, HTTPReqCnt, HTTPReqRate}} {
		if !g.on {
			continue
		}
		if f := t.field(g.gauge); f != nil {
			addField(data, f, 0, now, 1)
		}
		for _, k := range []Kind{g.count, g.rate} {
			if f := t.field(k); f != nil {
				addOwn(data, f, 0, now, 1) // the cluster's total has it already
			}
		}
	}
	t.mergeLocked(sh, idx, remote, now)
	m := sh.meta(idx)
	m.refs++
	t.touch(sh, idx, m, now)
	return Ref{sh: sh, idx: idx, gen: m.gen}, t.snapshot(sh, idx, now).Values, nil
}

// Adds returns, by column, what the connection and request events of ev
// change: conn_cnt, conn_rate and http_req_cnt, http_req_rate +1 for an
// opening, conn_cur and req_cur +1 for an opening and −1 for an end.
// Status and byte counts are not included.
func (s *Schema) Adds(ev Events) []int64 {
	adds := make([]int64, len(s.columns))
	for i, c := range s.columns {
		switch s.Fields[c.field].Kind {
		case ConnCnt, ConnRate:
			adds[i] = b2i(ev.Conn)
		case HTTPReqCnt, HTTPReqRate:
			adds[i] = b2i(ev.Req)
		case ConnCur:
			adds[i] = b2i(ev.Conn) - b2i(ev.ConnEnd)
		case ReqCur:
			adds[i] = b2i(ev.Req) - b2i(ev.ReqEnd)
		}
	}
	return adds
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// ColumnIndex returns the index of c in Columns().
func (s *Schema) ColumnIndex(c Column) int {
	for i, sc := range s.columns {
		if sc.field == c.field && sc.elem == c.elem {
			return i
		}
	}
	return -1
}

// Bytes returns the key's bytes: 16 for ip and integer keys, the string
// itself for string and binary keys. KeyFromBytes reverses it.
func (k Key) Bytes(s *Schema) []byte {
	if s.Type == KeyString || s.Type == KeyBinary {
		return []byte(k.s)
	}
	return k.b[:]
}

// KeyFromBytes rebuilds a key from Bytes.
func (s *Schema) KeyFromBytes(b []byte) (Key, bool) {
	if s.Type == KeyString || s.Type == KeyBinary {
		if len(b) > s.KeyLen {
			return Key{}, false
		}
		return Key{s: string(b)}, true
	}
	var k Key
	if len(b) != len(k.b) {
		return Key{}, false
	}
	copy(k.b[:], b)
	return k, true
}

// FieldOf returns the field a column reads.
func (s *Schema) FieldOf(c Column) Field { return s.Fields[c.field] }
