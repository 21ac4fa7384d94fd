package proxyv2

import (
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// dropInterval is how often repeated drops of one result are summed up in
// a log line.
const dropInterval = time.Second

// dropLog logs refused connections without flooding the log: the first
// drop of a result is logged in full; further drops of that result are
// counted and logged as one line per second with their count, until a
// second passes without one. rampart_proxy_headers_total counts every
// connection exactly, whatever is logged.
type dropLog struct {
	logger *zap.Logger

	mu      sync.Mutex
	windows map[Result]*dropWindow // results being summed up
	stopped bool
}

// dropWindow sums up the drops of one result between two log lines.
type dropWindow struct {
	dropped  int
	lastPeer net.Addr
	lastErr  error
	timer    *time.Timer
}

// newDropLog returns a dropLog writing to logger.
func newDropLog(logger *zap.Logger) *dropLog {
	return &dropLog{logger: logger, windows: make(map[Result]*dropWindow)}
}

// dropLevel is the level of a result's lines: connections closed before
// sending anything are routine (port scans, health checks of a TCP load
// balancer), the others are worth a warning.
func dropLevel(res Result) zapcore.Level {
	if res == ResultEmpty {
		return zapcore.DebugLevel
	}
	return zapcore.WarnLevel
}

// drop logs one refused connection from peer, or counts it towards its
// result's next summary line.
func (l *dropLog) drop(res Result, peer net.Addr, err error) {
	level := dropLevel(res)
	if !l.logger.Core().Enabled(level) {
		return
	}
	l.mu.Lock()
	if w, summing := l.windows[res]; summing {
		w.dropped++
		w.lastPeer, w.lastErr = peer, err
		l.mu.Unlock()
		return
	}
	if !l.stopped {
		l.windows[res] = &dropWindow{timer: time.AfterFunc(dropInterval, func() { l.summarize(res) })}
	}
	l.mu.Unlock()
	l.logger.Log(level, "connection dropped",
		zap.String("result", string(res)),
		zap.Stringer("peer", peer),
		zap.Error(err))
}

// summarize logs the drops of res counted in the last interval, and
// stops summing up when there were none.
func (l *dropLog) summarize(res Result) {
	l.mu.Lock()
	w := l.windows[res]
	if w == nil {
		l.mu.Unlock()
		return
	}
	dropped, peer, err := w.dropped, w.lastPeer, w.lastErr
	if dropped == 0 || l.stopped {
		delete(l.windows, res)
	} else {
		w.dropped, w.lastPeer, w.lastErr = 0, nil, nil
		w.timer.Reset(dropInterval)
	}
	l.mu.Unlock()
	if dropped > 0 {
		l.logSummary(res, dropped, peer, err)
	}
}

// logSummary writes the line for dropped connections of one result.
func (l *dropLog) logSummary(res Result, dropped int, lastPeer net.Addr, lastErr error) {
	l.logger.Log(dropLevel(res), "connections dropped",
		zap.String("result", string(res)),
		zap.Int("count", dropped),
		zap.Duration("interval", dropInterval),
		zap.Stringer("last_peer", lastPeer),
		zap.NamedError("last_error", lastErr))
}

// stop logs the counts not yet logged and stops summing up; later drops
// are logged one by one.
func (l *dropLog) stop() {
	type pending struct {
		res Result
		w   *dropWindow
	}
	var flush []pending
	l.mu.Lock()
	l.stopped = true
	for res, w := range l.windows {
		if w.timer.Stop() {
			// the timer will not run: its count is logged here
			delete(l.windows, res)
			if w.dropped > 0 {
				flush = append(flush, pending{res, w})
			}
		}
	}
	l.mu.Unlock()
	for _, p := range flush {
		l.logSummary(p.res, p.w.dropped, p.w.lastPeer, p.w.lastErr)
	}
}
