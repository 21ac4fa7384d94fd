package table

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"sync"
)

// Entry storage. Each shard keeps its entries in pages of pageSize slots:
// bookkeeping, key bytes and data words in flat arrays without pointers (so
// the garbage collector never scans them and no entry costs an allocation),
// and finds them through an open-addressing index of (hash, slot) words.
// Recency is CLOCK: a hit sets a bit in the entry, and eviction sweeps a
// hand over the slots, sparing (and clearing) entries whose bit is set, so
// that a hit writes only its own entry and never relinks a list.

const (
	pageBits = 8
	pageSize = 1 << pageBits

	dirtyBit   = 1 << 31 // changed since the last CollectDeltas
	usedBit    = 1 << 30 // hit since the CLOCK hand last passed
	liveBit    = 1 << 29 // the slot holds an entry
	setBit     = 1 << 28 // a gpt, server_id or ban value was set since the last CollectDeltas
	holderMask = setBit - 1
)

// meta is the bookkeeping of one entry slot: expiry deadline, holders (with
// the flag bits above) and a generation that changes whenever the slot is
// freed, so stale references are ignored.
type meta struct {
	exp  int64
	refs uint32
	gen  uint32
}

// holders is the number of live connections and requests holding the entry.
func (m *meta) holders() uint32 { return m.refs & holderMask }

// live reports whether the slot holds an entry.
func (m *meta) live() bool { return m.refs&liveBit != 0 }

type page struct {
	meta [pageSize]meta
	keys []byte   // keyWidth bytes per slot
	klen []uint16 // string and binary keys: the key's length
	data []uint32 // Schema.stride words per slot
}

type shard struct {
	mu    sync.Mutex
	index []uint64 // hash<<32 | slot; 0 is empty; a power of two long
	n     int      // live entries
	pages []*page
	free  []uint32
	next  uint32 // first never-used slot; slot 0 is never used
	hand  uint32 // the CLOCK hand: the next slot eviction examines
	dirty []uint32
	_     [40]byte // shards never share a cache line
}

// hash returns the hash of a key: its top half picks the shard, its bottom
// half is the index tag.
func (t *Table) hash(k Key) uint64 {
	if t.strKeys {
		return maphash.String(t.seed, k.s)
	}
	return hashFixed(&k.b)
}

func hashFixed(b *[16]byte) uint64 {
	a := binary.LittleEndian.Uint64(b[:8])
	c := binary.LittleEndian.Uint64(b[8:])
	hi, lo := bits.Mul64(a^0x9e3779b97f4a7c15, c^0xc2b2ae3d27d4eb4f)
	return hi ^ lo
}

// hashAt returns the hash of the key stored in slot idx.
func (t *Table) hashAt(sh *shard, idx uint32) uint64 {
	p, o := sh.pages[idx>>pageBits], int(idx&(pageSize-1))
	kb := p.keys[o*t.keyWidth : (o+1)*t.keyWidth]
	if t.strKeys {
		return maphash.Bytes(t.seed, kb[:p.klen[o]])
	}
	return hashFixed((*[16]byte)(kb))
}

func (t *Table) shardOf(k Key) *shard {
	sh, _ := t.locate(k)
	return sh
}

// locate returns the shard of k and the hash of k.
func (t *Table) locate(k Key) (*shard, uint64) {
	h := t.hash(k)
	return &t.shards[uint32(h>>32)&t.mask], h
}

func (sh *shard) meta(idx uint32) *meta { return &sh.pages[idx>>pageBits].meta[idx&(pageSize-1)] }

func (t *Table) data(sh *shard, idx uint32) []uint32 {
	p := sh.pages[idx>>pageBits]
	o := int(idx&(pageSize-1)) * t.schema.stride
	return p.data[o : o+t.schema.stride : o+t.schema.stride]
}

func (t *Table) keyAt(sh *shard, idx uint32) Key {
	p, o := sh.pages[idx>>pageBits], int(idx&(pageSize-1))
	kb := p.keys[o*t.keyWidth : (o+1)*t.keyWidth]
	if t.strKeys {
		return Key{s: string(kb[:p.klen[o]])}
	}
	return Key{b: *(*[16]byte)(kb)}
}

// keyIs reports whether slot idx holds key k.
func (t *Table) keyIs(sh *shard, idx uint32, k Key) bool {
	p, o := sh.pages[idx>>pageBits], int(idx&(pageSize-1))
	kb := p.keys[o*t.keyWidth : (o+1)*t.keyWidth]
	if t.strKeys {
		return int(p.klen[o]) == len(k.s) && string(kb[:len(k.s)]) == k.s
	}
	return *(*[16]byte)(kb) == k.b
}

func (t *Table) find(sh *shard, k Key) (uint32, bool) {
	return t.findHashed(sh, k, t.hash(k))
}

// findHashed finds the slot of k, whose hash is h, in its shard.
func (t *Table) findHashed(sh *shard, k Key, h uint64) (uint32, bool) {
	if len(sh.index) == 0 {
		return 0, false
	}
	mask := uint32(len(sh.index) - 1)
	tag := uint32(h)
	for i := tag & mask; ; i = (i + 1) & mask {
		s := sh.index[i]
		if s == 0 {
			return 0, false
		}
		if uint32(s>>32) == tag && t.keyIs(sh, uint32(s), k) {
			return uint32(s), true
		}
	}
}

// indexAdd records slot idx under hash h, growing the index to keep it at
// most three quarters full.
func (sh *shard) indexAdd(h uint64, idx uint32) {
	if (sh.n+1)*4 > len(sh.index)*3 {
		old := sh.index
		sh.index = make([]uint64, max(16, 2*len(old)))
		for _, s := range old {
			if s != 0 {
				sh.indexPut(s)
			}
		}
	}
	sh.indexPut(uint64(uint32(h))<<32 | uint64(idx))
}

func (sh *shard) indexPut(s uint64) {
	mask := uint32(len(sh.index) - 1)
	i := uint32(s>>32) & mask
	for sh.index[i] != 0 {
		i = (i + 1) & mask
	}
	sh.index[i] = s
}

// indexRemove drops slot idx, stored under hash h, shifting the entries
// after it back so that no probe sequence is broken (no tombstones).
func (sh *shard) indexRemove(h uint64, idx uint32) {
	mask := uint32(len(sh.index) - 1)
	i := uint32(h) & mask
	for uint32(sh.index[i]) != idx {
		i = (i + 1) & mask
	}
	for j := i; ; {
		j = (j + 1) & mask
		s := sh.index[j]
		if s == 0 {
			break
		}
		home := uint32(s>>32) & mask
		// The entry at j stays when its home lies cyclically in (i, j].
		if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
			continue
		}
		sh.index[i] = s
		i = j
	}
	sh.index[i] = 0
}

// touch refreshes an entry's expiry.
func (t *Table) touch(_ *shard, _ uint32, m *meta, now int64) {
	if e := t.expireMs.Load(); e > 0 {
		m.exp = now + e
	}
}

func (t *Table) expired(m *meta, now int64) bool {
	return m.exp != 0 && m.exp <= now && m.holders() == 0
}

// alloc takes a free slot, growing the shard by one page when needed.
func (t *Table) alloc(sh *shard) uint32 {
	if n := len(sh.free); n > 0 {
		idx := sh.free[n-1]
		sh.free = sh.free[:n-1]
		return idx
	}
	idx := sh.next
	if int(idx>>pageBits) == len(sh.pages) {
		p := &page{data: make([]uint32, pageSize*t.schema.stride), keys: make([]byte, pageSize*t.keyWidth)}
		if t.strKeys {
			p.klen = make([]uint16, pageSize)
		}
		sh.pages = append(sh.pages, p)
	}
	sh.next++
	return idx
}

// insert adds a new entry for k (hash h), evicting if the table is full.
func (t *Table) insert(sh *shard, k Key, h uint64) (uint32, error) {
	// Reserve the slot first, so that concurrent inserts in other shards
	// never take the table past its size.
	if t.used.Add(1) > t.size.Load() && !t.evictOne(sh) {
		t.used.Add(-1)
		return 0, ErrFull
	}
	idx := t.alloc(sh)
	p, o := sh.pages[idx>>pageBits], int(idx&(pageSize-1))
	kb := p.keys[o*t.keyWidth : (o+1)*t.keyWidth]
	if t.strKeys {
		p.klen[o] = uint16(copy(kb, k.s))
	} else {
		copy(kb, k.b[:])
	}
	sh.indexAdd(h, idx)
	m := sh.meta(idx)
	m.refs, m.exp = liveBit, 0
	sh.n++
	return idx, nil
}

// remove frees an entry.
func (t *Table) remove(sh *shard, idx uint32) {
	sh.indexRemove(t.hashAt(sh, idx), idx)
	m := sh.meta(idx)
	m.gen++
	m.refs, m.exp = 0, 0
	clear(t.data(sh, idx))
	sh.free = append(sh.free, idx)
	sh.n--
	t.used.Add(-1)
}

// evictOne frees an entry that nobody holds, chosen by the CLOCK hand: an
// entry hit since the hand last passed is spared once (its bit cleared).
// It reports false when every entry of the shard is held or the shard is
// empty; two turns of the hand are enough to know.
func (t *Table) evictOne(sh *shard) bool {
	if sh.n == 0 {
		return false
	}
	for steps := 2 * int(sh.next); steps > 0; steps-- {
		idx := sh.hand
		if idx == 0 || idx >= sh.next {
			idx = 1
		}
		sh.hand = idx + 1
		m := sh.meta(idx)
		if !m.live() || m.holders() != 0 {
			continue
		}
		if m.refs&usedBit != 0 {
			m.refs &^= usedBit
			continue
		}
		t.remove(sh, idx)
		t.evictions.Add(1)
		return true
	}
	return false
}

// Sweep removes the entries whose expiry passed; it returns how many it
// removed. Call it periodically; lookups also ignore expired entries on
// their own. It examines every slot, one page (256 slots) per lock hold,
// so that requests on the same shard wait at most for one page.
func (t *Table) Sweep() int {
	if t.expireMs.Load() <= 0 {
		return 0
	}
	removed := 0
	now := t.now()
	for i := range t.shards {
		sh := &t.shards[i]
		for pi := 0; ; pi++ {
			sh.mu.Lock()
			if pi >= len(sh.pages) {
				sh.mu.Unlock()
				break
			}
			p := sh.pages[pi]
			for o := range p.meta {
				m := &p.meta[o]
				if m.exp == 0 || m.exp > now || !m.live() || m.holders() != 0 {
					continue
				}
				t.remove(sh, uint32(pi<<pageBits|o))
				removed++
			}
			sh.mu.Unlock()
		}
	}
	return removed
}
