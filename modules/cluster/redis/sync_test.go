package redis_test

import (
	"context"
	"encoding/binary"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/cluster/redis"
)

func startRedis(tb testing.TB) string {
	tb.Helper()
	bin := harness.Peer(tb, "redis-server", "redis-server")
	port := strconv.Itoa(harness.FreePort(tb))
	harness.Start(tb, "127.0.0.1:"+port, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local")
	return "redis://127.0.0.1:" + port + "/0"
}

var spec = redis.TableSpec{Name: "bench", Expire: time.Minute, Columns: []redis.Column{
	{Name: "http_req_cnt", Kind: redis.Counter},
	{Name: "http_req_rate", Kind: redis.Rate, Period: 10 * time.Second},
	{Name: "conn_cur", Kind: redis.Gauge},
	{Name: "ban", Kind: redis.Value},
}}

func changes(n int) []redis.Change {
	out := make([]redis.Change, n)
	for i := range out {
		k := make([]byte, 16)
		binary.BigEndian.PutUint64(k[8:], uint64(i))
		out[i] = redis.Change{Key: k, Adds: []uint64{1, 1, 0, 0}, Values: []uint64{0, 0, 1, 0}}
	}
	return out
}

// TestSyncSumsTwoEdges: two syncers (two edges) count the same key; each
// reads the sum, the other edge's gauge, and the value the other set.
func TestSyncSumsTwoEdges(t *testing.T) {
	url := startRedis(t)
	open := func() *redis.Syncer {
		c, err := redis.Target{URLs: []string{url}, Timeout: time.Second}.Open()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return redis.NewSyncer(c, "e"+strconv.Itoa(len(t.Name())), spec, 100*time.Millisecond)
	}
	a := open()
	c, _ := redis.Target{URLs: []string{url}, Timeout: time.Second}.Open()
	defer c.Close()
	b := redis.NewSyncer(c, "other", spec, 100*time.Millisecond)
	ctx := context.Background()
	k := []byte("k")
	if _, err := a.Sync(ctx, []redis.Change{{Key: k, Adds: []uint64{3, 3, 0, 0}, Values: []uint64{0, 0, 2, 0}}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sync(ctx, []redis.Change{{Key: k, Adds: []uint64{4, 4, 0, 0}, Values: []uint64{0, 0, 5, 99}, Set: true}}, nil); err != nil {
		t.Fatal(err)
	}
	totals, err := a.Sync(ctx, nil, [][]byte{k})
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[0].Values[0] != 7 || totals[0].Values[1] < 4 || totals[0].Values[2] != 5 || totals[0].Values[3] != 99 {
		t.Fatalf("totals %+v, want cnt 7, rate ≥ 4, other edges' gauge 5, ban 99", totals)
	}
}

// TestSyncResendAfterPauseCountsOnce: a batch that timed out while Redis
// slept (and was applied when it woke) is resent and skipped.
func TestSyncResendAfterPauseCountsOnce(t *testing.T) {
	url := startRedis(t)
	c, _ := redis.Target{URLs: []string{url}, Timeout: 50 * time.Millisecond}.Open()
	defer c.Close()
	s := redis.NewSyncer(c, "e1", spec, 100*time.Millisecond)
	ctx := context.Background()
	k := []byte("k")
	if _, err := s.Sync(ctx, []redis.Change{{Key: k, Adds: []uint64{1, 1, 0, 0}, Values: make([]uint64, 4)}}, nil); err != nil {
		t.Fatal(err)
	}
	cli := exec.Command(harness.Peer(t, "redis-cli", "redis-tools"), "-u", url, "DEBUG", "SLEEP", "1")
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	probe, _ := redis.Target{URLs: []string{url}, Timeout: 50 * time.Millisecond}.Open()
	defer probe.Close()
	for deadline := time.Now().Add(2 * time.Second); probe.Ping(ctx).Err() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server never paused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Sync(ctx, []redis.Change{{Key: k, Adds: []uint64{10, 10, 0, 0}, Values: make([]uint64, 4)}}, nil); err == nil {
		t.Fatal("sync during DEBUG SLEEP succeeded")
	}
	_ = cli.Wait()
	totals, err := s.Sync(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[0].Values[0] != 11 {
		t.Fatalf("totals %+v, want http_req_cnt 11", totals)
	}
	if st := s.Stats(); !st.Connected || st.Errors != 1 || len(st.Edges) != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// BenchmarkSync10kKeys is one sync round of 10k changed keys: push and pull
// in one pipeline. The Redis memory per key is reported from INFO memory.
func BenchmarkSync10kKeys(b *testing.B) {
	url := startRedis(b)
	c, _ := redis.Target{URLs: []string{url}, Timeout: 5 * time.Second}.Open()
	defer c.Close()
	s := redis.NewSyncer(c, "e1", spec, 100*time.Millisecond)
	ctx := context.Background()
	used := func() float64 {
		info, _ := c.Info(ctx, "memory").Result()
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseFloat(v, 64)
				return n
			}
		}
		return 0
	}
	before := used()
	ch := changes(10_000)
	if _, err := s.Sync(ctx, ch, nil); err != nil { // loads the script
		b.Fatal(err)
	}
	perKey := (used() - before) / 10_000
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sync(ctx, ch, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perKey, "redis-bytes/key")
}

// TestSyncFloodWithinTimeout: a flood of new keys (20,000 changed in one
// round, as an attack of distinct clients makes) with the default 50 ms
// per-operation timeout. One pipeline of every key outlasted the timeout,
// failed, and was resent whole every round, so the edge never caught up;
// the round now goes out in pipelines that each fit the timeout, stops when
// its time is spent, and leaves the rest to the next rounds: every key
// reaches Redis once, counted once.
func TestSyncFloodWithinTimeout(t *testing.T) {
	url := startRedis(t)
	c, err := redis.Target{URLs: []string{url}, Timeout: 50 * time.Millisecond}.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := redis.NewSyncer(c, "e1", spec, 100*time.Millisecond)
	ctx := context.Background()
	const keys = 20_000
	pending := changes(keys)
	failed := 0
	for round := 0; round < 400; round++ {
		if _, err := s.Sync(ctx, pending, nil); err != nil {
			failed++
		}
		pending = nil
		if n := redisKeys(t, url, "rampart:bench:{*}"); n == keys && s.Stats().Syncs > 0 && round > 0 {
			break
		}
	}
	if n := redisKeys(t, url, "rampart:bench:{*}"); n != keys {
		t.Fatalf("after the flood, Redis holds %d of %d entries (%d rounds failed)", n, keys, failed)
	}
	if failed > 0 {
		t.Errorf("%d sync rounds failed on a healthy Redis", failed)
	}
	// every key counted once
	for i, ch := range changes(keys) {
		got, err := c.HGet(ctx, "rampart:bench:{"+string(ch.Key)+"}", "http_req_cnt").Result()
		if err != nil || got != "1" {
			t.Fatalf("key %d: http_req_cnt %q (%v) in Redis, want 1", i, got, err)
		}
	}
}

// redisKeys counts the Redis keys matching pattern (entry hashes only: the
// pattern's {*} excludes the rate windows, which end in ":w...").
func redisKeys(t *testing.T, url, pattern string) int {
	t.Helper()
	cli := harness.Peer(t, "redis-cli", "redis-tools")
	out, err := exec.Command(cli, "-u", url, "--scan", "--pattern", pattern).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(out), "\n")
}
