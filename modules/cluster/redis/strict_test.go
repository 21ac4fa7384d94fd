package redis_test

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/cluster/redis"
)

var strictSpec = redis.TableSpec{Name: "strict", Expire: time.Minute, Strict: true, Columns: spec.Columns}

// strictEdge is one edge's syncer and batcher of strictSpec.
func strictEdge(tb testing.TB, url, node string, timeout time.Duration) (*redis.Syncer, *redis.Batcher) {
	tb.Helper()
	c, err := redis.Target{URLs: []string{url}, Timeout: timeout}.Open()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := redis.NewSyncer(c, node, strictSpec, 100*time.Millisecond)
	b := redis.NewBatcher(ctx, s, timeout)
	tb.Cleanup(func() {
		cancel()
		<-b.Done()
		c.Close()
	})
	return s, b
}

func inc(key string, cnt, rate, gauge int64) redis.Increment {
	return redis.Increment{Key: []byte(key), Adds: []int64{cnt, rate, gauge, 0}, Values: make([]uint64, 4)}
}

// TestBatcherCountsExactlyUnderConcurrency: three edges with 16 concurrent
// callers each increment one key; every caller reads back its own count,
// so the counts seen are exactly 1..N, each once, for the counter and the
// rate; the callers shared round trips.
func TestBatcherCountsExactlyUnderConcurrency(t *testing.T) {
	url := startRedis(t)
	const edges, callers, each = 3, 16, 20
	var batchers []*redis.Batcher
	for e := range edges {
		_, b := strictEdge(t, url, "e"+strconv.Itoa(e), 2*time.Second)
		batchers = append(batchers, b)
	}
	var mu sync.Mutex
	var cnts, rates []uint64
	var wg sync.WaitGroup
	for _, b := range batchers {
		for range callers {
			wg.Go(func() {
				for range each {
					tot, _, err := b.Add(context.Background(), inc("k", 1, 1, 0))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					cnts, rates = append(cnts, tot.Values[0]), append(rates, tot.Values[1])
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	const n = edges * callers * each
	sort.Slice(cnts, func(i, j int) bool { return cnts[i] < cnts[j] })
	for i, c := range cnts {
		if c != uint64(i+1) {
			t.Fatalf("counts seen %v...: want each of 1..%d once", cnts[:min(len(cnts), 20)], n)
		}
	}
	if len(cnts) != n {
		t.Fatalf("%d results, want %d", len(cnts), n)
	}
	// The 10 s rate's previous window is empty unless the run crossed a
	// window boundary; within one window it counts exactly as the counter.
	sort.Slice(rates, func(i, j int) bool { return rates[i] < rates[j] })
	if rates[n-1] != n && time.Now().UnixMilli()%10_000 > 2_000 {
		t.Fatalf("last rate %d, want %d", rates[n-1], n)
	}
	var batches, sent uint64
	for _, b := range batchers {
		bt, s := b.Stats()
		batches, sent = batches+bt, sent+s
	}
	if sent != n || batches >= n {
		t.Fatalf("%d increments in %d round trips: want %d increments in fewer round trips", sent, batches, n)
	}
	t.Logf("%d increments in %d round trips (%.1f per round trip)", sent, batches, float64(sent)/float64(batches))
}

// TestBatcherRoutesResults: concurrent callers on different keys each get
// their own key's totals, with the other edge's gauge and value.
func TestBatcherRoutesResults(t *testing.T) {
	url := startRedis(t)
	s1, b1 := strictEdge(t, url, "e1", 2*time.Second)
	s2, b2 := strictEdge(t, url, "e2", 2*time.Second)
	ctx := context.Background()
	// Both edges sync once so each knows the other is alive.
	for _, s := range []*redis.Syncer{s1, s2, s1} {
		if _, err := s.Sync(ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	ban := inc("k0", 0, 0, 2)
	ban.Values[3], ban.Set = 12345, true
	if _, _, err := b2.Add(ctx, ban); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			key := "k" + strconv.Itoa(i%8)
			tot, _, err := b1.Add(ctx, inc(key, int64(i+1)*1000, 0, 1))
			if err != nil {
				t.Error(err)
				return
			}
			if string(tot.Key) != key || tot.Values[0]%1000 != 0 || tot.Values[0] < uint64(i+1)*1000 {
				t.Errorf("caller %d on %s got %s %v", i, key, tot.Key, tot.Values)
			}
			if key == "k0" && (tot.Values[2] != 2 || tot.Values[3] != 12345) {
				t.Errorf("k0: other edge's gauge %d, ban %d: want 2 and 12345", tot.Values[2], tot.Values[3])
			}
		})
	}
	wg.Wait()
	// e1's four gauges on k0 are e2's view of the other edges.
	tot, _, err := b2.Add(ctx, inc("k0", 0, 0, 0))
	if err != nil || tot.Values[2] != 4 {
		t.Fatalf("e2 reads e1's gauge %v (%v), want 4", tot.Values, err)
	}
	for range 4 {
		if !b1.Release(inc("k0", 0, 0, -1)) {
			t.Fatal("release dropped")
		}
	}
	waitUntil(t, func() bool {
		tot, _, err := b2.Add(ctx, inc("k0", 0, 0, 0))
		return err == nil && tot.Values[2] == 0
	})
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}

// TestBatcherTimeout: while Redis sleeps, Add returns ErrTimeout after
// about the timeout, never waiting for Redis; afterwards it works again.
func TestBatcherTimeout(t *testing.T) {
	url := startRedis(t)
	_, b := strictEdge(t, url, "e1", 50*time.Millisecond)
	ctx := context.Background()
	if _, _, err := b.Add(ctx, inc("k", 1, 1, 0)); err != nil {
		t.Fatal(err)
	}
	cli := exec.Command(harness.Peer(t, "redis-cli", "redis-tools"), "-u", url, "DEBUG", "SLEEP", "2")
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Wait() }()
	waitUntil(t, func() bool {
		_, _, err := b.Add(ctx, inc("probe", 0, 0, 0))
		return err != nil
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			start := time.Now()
			_, _, err := b.Add(ctx, inc("k", 1, 1, 0))
			// Generous: the point is that nobody waits for the 2 s sleep.
			if took := time.Since(start); !errors.Is(err, redis.ErrTimeout) || took > time.Second {
				t.Errorf("Add during DEBUG SLEEP: %v after %v, want ErrTimeout after about 50ms", err, took)
			}
		})
	}
	wg.Wait()
	_ = cli.Wait()
	waitUntil(t, func() bool {
		_, _, err := b.Add(ctx, inc("probe", 0, 0, 0))
		return err == nil
	})
}

// BenchmarkStrictAdd64 is the strict request path's Redis part under 64
// concurrent callers on 64 keys: increments per pipelined round trip and
// CPU (of this process) per increment.
func BenchmarkStrictAdd64(b *testing.B) {
	url := startRedis(b)
	_, bt := strictEdge(b, url, "e1", 5*time.Second)
	ctx := context.Background()
	if _, _, err := bt.Add(ctx, inc("warm", 1, 1, 0)); err != nil { // loads the script
		b.Fatal(err)
	}
	b0, s0 := bt.Stats()
	var next sync.Mutex
	id := 0
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		next.Lock()
		key := "k" + strconv.Itoa(id%64)
		id++
		next.Unlock()
		for pb.Next() {
			if _, _, err := bt.Add(ctx, inc(key, 1, 1, 0)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	cpu := cpuTime() - cpu0
	b1, s1 := bt.Stats()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(s1-s0), "cpu-ns/incr")
	b.ReportMetric(float64(s1-s0)/float64(b1-b0), "incr/roundtrip")
}

// cpuTime is the user and system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
