package table

// Replication support for a cluster mode. A table whose schema has
// Replicated set keeps, per entry, the increments of every summable column
// (counters, rates, gpc) since the last sync. A sync loop calls
// CollectDeltas, adds the deltas to the shared totals (for example with
// Redis INCRBY), and hands the totals it reads back to Merge: the entry then
// reads as the cluster total plus whatever was counted locally since the
// collect. Gauges (conn_cur, req_cur) stay local; gpt, server_id and ban are
// last-writer-wins values.

// Delta is what changed in one entry since the previous CollectDeltas.
type Delta struct {
	Key Key
	// Adds holds, per Schema.Columns() index, the increments of summable
	// columns since the last collect (0 for other columns).
	Adds []uint64
	// Values holds, per column, the current value (for the last-writer-wins
	// columns gpt, server_id and ban, in milliseconds left).
	Values []uint64
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
			m.refs &^= dirtyBit
			data := t.data(sh, idx)
			d := Delta{Key: t.keyAt(sh, idx), Adds: make([]uint64, len(cols)), Values: make([]uint64, len(cols))}
			for ci, c := range cols {
				f := &t.schema.Fields[c.field]
				if f.delta >= 0 {
					d.Adds[ci] = takeDelta(data, f, c.elem)
				}
				d.Values[ci] = getField(data, f, c.elem, now)
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
// of a summable column, or the shared value of gpt, server_id and ban
// (milliseconds left).
type Remote = Write

// Merge applies cluster values to the entry of k, creating it if needed. A
// summable column becomes the cluster total plus the local delta not yet
// collected; a rate reads that sum for the rest of the current period;
// gauges are left alone.
func (t *Table) Merge(k Key, remote []Remote) error {
	sh, idx, now, err := t.lockEntry(k)
	if err != nil {
		return err
	}
	defer sh.mu.Unlock()
	data := t.data(sh, idx)
	for _, r := range remote {
		f := &t.schema.Fields[r.Column.field]
		switch {
		case f.Kind == ConnCur || f.Kind == ReqCur:
			continue
		case f.delta >= 0:
			setField(data, f, r.Column.elem, now, satAdd64(r.Value, peekDelta(data, f, r.Column.elem)))
		default:
			setField(data, f, r.Column.elem, now, r.Value)
		}
	}
	t.touch(sh, idx, sh.meta(idx), now)
	return nil
}
