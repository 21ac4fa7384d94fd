package proxyv2

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestDropLogSumsUpFloods drops 4,000 connections of two results from
// eight goroutines: the log holds the first drop of each result in full and
// then one line per result and second whose counts add up exactly.
func TestDropLogSumsUpFloods(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	drops := newDropLog(zap.New(core))
	peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				res := ResultMissing
				if g%2 == 1 {
					res = ResultTimeout
				}
				drops.drop(res, peer, errors.New("bad"))
				if i%100 == 0 {
					time.Sleep(250 * time.Millisecond) // spread over more than a second
				}
			}
		}()
	}
	wg.Wait()
	drops.stop()
	elapsed := time.Since(start)

	dropped := map[string]int64{}
	lines := map[string]int{}
	for _, e := range logs.All() {
		fields := e.ContextMap()
		res := fields["result"].(string)
		lines[res]++
		switch e.Message {
		case "connection dropped":
			dropped[res]++
			if fields["peer"] != "127.0.0.1:4000" || fields["error"] != "bad" {
				t.Errorf("first drop lacks peer or error: %v", fields)
			}
		case "connections dropped":
			dropped[res] += fields["count"].(int64)
		default:
			t.Errorf("unexpected line %q", e.Message)
		}
		if e.Level != zapcore.WarnLevel {
			t.Errorf("%s logged at %s", res, e.Level)
		}
	}
	maxLines := 2 + int(elapsed/dropInterval)
	for _, res := range []Result{ResultMissing, ResultTimeout} {
		if dropped[string(res)] != 2000 {
			t.Errorf("%s: the log accounts for %d drops, want 2000", res, dropped[string(res)])
		}
		if lines[string(res)] > maxLines {
			t.Errorf("%s: %d lines in %s, want at most %d", res, lines[string(res)], elapsed, maxLines)
		}
	}
	t.Logf("4000 drops in %s: %d lines", elapsed, logs.Len())
}

// TestDropLogQuietAfterASecond checks that a lone drop is one line, and that after a quiet
// second the next drop is logged in full again.
func TestDropLogQuietAfterASecond(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	drops := newDropLog(zap.New(core))
	defer drops.stop()
	peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	drops.drop(ResultMalformed, peer, errors.New("first"))
	time.Sleep(2*dropInterval + 200*time.Millisecond)
	drops.drop(ResultMalformed, peer, errors.New("second"))
	all := logs.All()
	if len(all) != 2 || all[0].Message != "connection dropped" || all[1].Message != "connection dropped" ||
		all[1].ContextMap()["error"] != "second" {
		t.Errorf("lines: %v", all)
	}
}

// TestDropLogDisabledLevel checks that drops below the logger's level cost no lock and
// no line.
func TestDropLogDisabledLevel(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	drops := newDropLog(zap.New(core))
	drops.drop(ResultEmpty, &net.TCPAddr{}, errors.New("eof"))
	drops.stop()
	if logs.Len() != 0 || len(drops.windows) != 0 {
		t.Errorf("a debug-level drop was logged or summed up: %v", logs.All())
	}
}
