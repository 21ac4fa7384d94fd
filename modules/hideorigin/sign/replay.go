package sign

import (
	"sync"
	"time"
)

// ReplayCache remembers nonces in two generations that rotate every window:
// a nonce is remembered for at least one window and at most two. Its size is
// bounded: when the current generation is full new nonces are refused
// (fail closed) rather than forgetting fresh ones.
type ReplayCache struct {
	mu       sync.Mutex
	window   time.Duration
	capacity int
	start    time.Time
	cur, old map[[nonceLen]byte]struct{}
}

// NewReplayCache returns a cache; window should be at least twice the
// verifier's max skew. capacity bounds each generation.
func NewReplayCache(window time.Duration, capacity int) *ReplayCache {
	return &ReplayCache{window: window, capacity: capacity,
		cur: make(map[[nonceLen]byte]struct{}), old: make(map[[nonceLen]byte]struct{})}
}

// Add records a nonce, or fails with ErrReplay if it was seen, or
// ErrCacheFull.
func (c *ReplayCache) Add(n [nonceLen]byte, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start.IsZero() {
		c.start = now
	}
	if el := now.Sub(c.start); el >= c.window {
		if el >= 2*c.window {
			c.old = make(map[[nonceLen]byte]struct{})
		} else {
			c.old = c.cur
		}
		c.cur = make(map[[nonceLen]byte]struct{}, len(c.old))
		c.start = now
	}
	if _, ok := c.cur[n]; ok {
		return ErrReplay
	}
	if _, ok := c.old[n]; ok {
		return ErrReplay
	}
	if len(c.cur) >= c.capacity {
		return ErrCacheFull
	}
	c.cur[n] = struct{}{}
	return nil
}

// Len returns how many nonces are remembered.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}
