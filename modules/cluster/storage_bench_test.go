package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// certPEM is the size of a typical certificate chain as certmagic stores it
// (leaf and intermediate, PEM).
var certPEM = bytes.Repeat([]byte("M"), 3500)

// BenchmarkStorage measures caddy.storage.redis against a real redis-server
// on loopback: what certmagic does when it stores, loads, locks and lists
// certificates. Each operation is one round trip (Store: a MULTI of the
// value and the index; Lock+Unlock: SET NX, then the compare-and-delete
// script). List runs in a storage holding 1,000 names (3 files each).
func BenchmarkStorage(b *testing.B) {
	addr, _ := harness.StartRedis(b)
	s := newTestStorage(b, addr, "bench", 10*time.Second)
	ctx := context.Background()
	const names = 1000
	for i := range names {
		for _, ext := range []string{"crt", "key", "json"} {
			if err := s.Store(ctx, fmt.Sprintf("certificates/ca/n%d.test/n%d.test.%s", i, i, ext), certPEM); err != nil {
				b.Fatal(err)
			}
		}
	}

	b.Run("Store", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := s.Store(ctx, fmt.Sprintf("certificates/ca/n%d.test/n%d.test.crt", i%names, i%names), certPEM); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Load", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			v, err := s.Load(ctx, fmt.Sprintf("certificates/ca/n%d.test/n%d.test.crt", i%names, i%names))
			if err != nil || len(v) != len(certPEM) {
				b.Fatalf("Load: %d bytes, %v", len(v), err)
			}
			i++
		}
	})
	b.Run("LockUnlock", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			name := fmt.Sprintf("issue_cert_n%d.test", i%names)
			if err := s.Lock(ctx, name); err != nil {
				b.Fatal(err)
			}
			if err := s.Unlock(ctx, name); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("ListOneName", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			keys, err := s.List(ctx, fmt.Sprintf("certificates/ca/n%d.test", i%names), false)
			if err != nil || len(keys) != 3 {
				b.Fatalf("List: %v, %v", keys, err)
			}
			i++
		}
	})
	b.Run("List1000Names", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			keys, err := s.List(ctx, "certificates/ca", false)
			if err != nil || len(keys) != names {
				b.Fatalf("List: %d keys, %v", len(keys), err)
			}
		}
	})
}
