package table

import "math"

// Word-level arithmetic on an entry's data. Every field is a run of 32-bit
// words: counters and gauges use one word per element (two for 64-bit bytes
// counters and ban), rates use three (period index, current, previous) or
// five for bytes rates.

func satAdd32(a uint32, n uint64) uint32 {
	s := uint64(a) + n
	if s > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(s)
}

func get64(w []uint32) uint64 { return uint64(w[0]) | uint64(w[1])<<32 }

func put64(w []uint32, v uint64) { w[0], w[1] = uint32(v), uint32(v>>32) }

func satAdd64(a, n uint64) uint64 {
	if a+n < a {
		return math.MaxUint64
	}
	return a + n
}

// rotate moves a rate's window to period index idx: the current period
// becomes the previous one when exactly one period went by; both are cleared
// after two or more.
func rotate(w []uint32, idx uint32, wide bool) {
	d := idx - w[0]
	if d == 0 {
		return
	}
	w[0] = idx
	if wide {
		if d == 1 {
			w[3], w[4] = w[1], w[2]
		} else {
			w[3], w[4] = 0, 0
		}
		w[1], w[2] = 0, 0
		return
	}
	if d == 1 {
		w[2] = w[1]
	} else {
		w[2] = 0
	}
	w[1] = 0
}

// rateAdd counts n events at time now (ms) in a rate of period p (ms).
func rateAdd(w []uint32, now, p int64, n uint64, wide bool) {
	rotate(w, uint32(now/p), wide)
	if wide {
		put64(w[1:], satAdd64(get64(w[1:]), n))
		return
	}
	w[1] = satAdd32(w[1], n)
}

// rateGet is HAProxy's two-period estimate of the events in the last period
// p ending at now: the current period's count plus the previous period's
// count weighted by the part of the previous period still inside the
// sliding window, current + previous × (p − elapsed) / p.
func rateGet(w []uint32, now, p int64, wide bool) uint64 {
	idx := uint32(now / p)
	var curr, prev uint64
	switch idx - w[0] {
	case 0:
		if wide {
			curr, prev = get64(w[1:]), get64(w[3:])
		} else {
			curr, prev = uint64(w[1]), uint64(w[2])
		}
	case 1:
		if wide {
			prev = get64(w[1:])
		} else {
			prev = uint64(w[1])
		}
	default:
		return 0
	}
	if prev == 0 {
		return curr
	}
	remaining := uint64(p - now%p)
	if prev > math.MaxUint64/uint64(p) {
		return curr + prev/uint64(p)*remaining
	}
	return curr + prev*remaining/uint64(p)
}

// rateSet makes a rate read v now: the current period holds v and the
// previous one is cleared.
func rateSet(w []uint32, now, p int64, v uint64, wide bool) {
	w[0] = uint32(now / p)
	if wide {
		put64(w[1:], v)
		w[3], w[4] = 0, 0
		return
	}
	if v > math.MaxUint32 {
		v = math.MaxUint32
	}
	w[1], w[2] = uint32(v), 0
}

// fieldWords returns element e of field f in an entry's data.
func fieldWords(data []uint32, f *Field, e int) []uint32 {
	o := f.off + e*f.width
	return data[o : o+f.width : o+f.width]
}

// addField adds n to element e of f (counter, gauge or rate) and records the
// delta of replicated schemas.
func addField(data []uint32, f *Field, e int, now int64, n uint64) {
	addWords(fieldWords(data, f, e), f, now, n)
	if f.delta >= 0 {
		addDelta(data, f, e, n)
	}
	addOwn(data, f, e, now, n)
}

// addWords adds n to one element's words w of f.
func addWords(w []uint32, f *Field, now int64, n uint64) {
	switch {
	case f.Kind.isRate():
		rateAdd(w, now, f.Period.Milliseconds(), n, f.width == 5)
	case f.width == 2:
		put64(w, satAdd64(get64(w), n))
	default:
		w[0] = satAdd32(w[0], n)
	}
}

// addOwn adds n to this node's own count of element e of f (replicated
// schemas).
func addOwn(data []uint32, f *Field, e int, now int64, n uint64) {
	if f.own >= 0 {
		o := f.own + e*f.width
		addWords(data[o:o+f.width:o+f.width], f, now, n)
	}
}

// getOwn reads this node's own part of element e of f: its own counts of a
// summable field, its local gauge. ok is false for other fields.
func getOwn(data []uint32, f *Field, e int, now int64) (v uint64, ok bool) {
	switch {
	case f.remote >= 0:
		return uint64(fieldWords(data, f, e)[0]), true
	case f.own >= 0:
		o := f.own + e*f.width
		return readWords(data[o:o+f.width:o+f.width], f, now), true
	}
	return 0, false
}

func addDelta(data []uint32, f *Field, e int, n uint64) {
	if f.Kind.wide() {
		o := f.delta + 2*e
		put64(data[o:], satAdd64(get64(data[o:]), n))
		return
	}
	o := f.delta + e
	data[o] = satAdd32(data[o], n)
}

// takeDelta returns and clears the delta of element e of f.
func takeDelta(data []uint32, f *Field, e int) uint64 {
	if f.Kind.wide() {
		o := f.delta + 2*e
		v := get64(data[o:])
		put64(data[o:], 0)
		return v
	}
	o := f.delta + e
	v := uint64(data[o])
	data[o] = 0
	return v
}

func peekDelta(data []uint32, f *Field, e int) uint64 {
	if f.Kind.wide() {
		return get64(data[f.delta+2*e:])
	}
	return uint64(data[f.delta+e])
}

// subField decrements a gauge, stopping at zero.
func subField(data []uint32, f *Field, e int) {
	w := fieldWords(data, f, e)
	if w[0] > 0 {
		w[0]--
	}
}

// getField reads element e of f at time now.
func getField(data []uint32, f *Field, e int, now int64) uint64 {
	w := fieldWords(data, f, e)
	switch {
	case f.Kind == Ban:
		until := int64(get64(w))
		if until <= now {
			return 0
		}
		return uint64(until - now) // milliseconds left
	case f.remote >= 0:
		return uint64(w[0]) + uint64(data[f.remote+e])
	}
	return readWords(w, f, now)
}

// readWords reads one element's words w of a counter, gauge or rate f.
func readWords(w []uint32, f *Field, now int64) uint64 {
	switch {
	case f.Kind.isRate():
		return rateGet(w, now, f.Period.Milliseconds(), f.width == 5)
	case f.width == 2:
		return get64(w)
	}
	return uint64(w[0])
}

// getLocal reads element e of f as getField does, without the other nodes'
// share of a gauge.
func getLocal(data []uint32, f *Field, e int, now int64) uint64 {
	if f.remote >= 0 {
		return uint64(fieldWords(data, f, e)[0])
	}
	return getField(data, f, e, now)
}

// MaxBanMs is the longest ban, 100 years in milliseconds: longer bans are
// clamped to it (so that no value wraps around into a lifted ban).
const MaxBanMs = 100 * 365 * 24 * 3600 * 1000

// setField stores v in element e of f at time now. Rates read v afterwards;
// ban takes v as milliseconds from now (0 lifts the ban).
func setField(data []uint32, f *Field, e int, now int64, v uint64) {
	w := fieldWords(data, f, e)
	switch {
	case f.Kind == Ban:
		if v == 0 {
			put64(w, 0)
		} else {
			put64(w, uint64(now)+min(v, MaxBanMs))
		}
	case f.Kind.isRate():
		rateSet(w, now, f.Period.Milliseconds(), v, f.width == 5)
	case f.width == 2:
		put64(w, v)
	default:
		if v > math.MaxUint32 {
			v = math.MaxUint32
		}
		w[0] = uint32(v)
	}
}
