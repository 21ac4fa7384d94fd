package proxyv2

import (
	"container/list"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// clientPools holds one http.Transport per distinct header, bounded in
// number (least recently used first out) and reaped when idle.
type clientPools struct {
	base *http.Transport
	max  int
	idle time.Duration

	mu      sync.Mutex
	entries map[string]*list.Element
	lru     list.List // of *clientPool, most recent first
	stop    chan struct{}
}

// clientPool is the transport of one header, with its last use.
type clientPool struct {
	header   string
	rt       *http.Transport
	lastUsed time.Time
}

// newClientPools starts pools cloned from base, at most maxPools of them,
// each closed after idle without use.
func newClientPools(base *http.Transport, maxPools int, idle time.Duration) *clientPools {
	p := &clientPools{base: base, max: maxPools, idle: idle, entries: make(map[string]*list.Element), stop: make(chan struct{})}
	go p.reap()
	return p
}

// get returns the transport whose connections start with header.
func (p *clientPools) get(header []byte) *http.Transport {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.entries[string(header)]; ok {
		pool := el.Value.(*clientPool)
		pool.lastUsed = now
		p.lru.MoveToFront(el)
		return pool.rt
	}
	pool := &clientPool{header: string(header), rt: p.base.Clone(), lastUsed: now}
	dial := p.base.DialContext
	pool.rt.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if _, err := conn.Write([]byte(pool.header)); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("writing PROXY header to %s: %w", addr, err)
		}
		return conn, nil
	}
	p.entries[pool.header] = p.lru.PushFront(pool)
	for p.lru.Len() > p.max {
		p.remove(p.lru.Back())
	}
	return pool.rt
}

// remove closes the pool at el and forgets it; p.mu is held.
func (p *clientPools) remove(el *list.Element) {
	pool := p.lru.Remove(el).(*clientPool)
	delete(p.entries, pool.header)
	pool.rt.CloseIdleConnections()
}

// reap closes the pools idle for longer than p.idle.
func (p *clientPools) reap() {
	ticker := time.NewTicker(max(p.idle/2, time.Second))
	defer ticker.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-ticker.C:
			p.mu.Lock()
			for el := p.lru.Back(); el != nil; {
				prev := el.Prev()
				if now.Sub(el.Value.(*clientPool).lastUsed) > p.idle {
					p.remove(el)
				}
				el = prev
			}
			p.mu.Unlock()
		}
	}
}

// len returns the number of pools.
func (p *clientPools) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

// close stops the reaper and closes every pool.
func (p *clientPools) close() {
	close(p.stop)
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.lru.Len() > 0 {
		p.remove(p.lru.Back())
	}
}
