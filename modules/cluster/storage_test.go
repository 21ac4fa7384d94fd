package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/cluster"
)

// storage is what the tests use of one edge's storage.
type storage interface {
	certmagic.Storage
	TryLock(ctx context.Context, name string) (bool, error)
	DropLock(ctx context.Context, name string) error
	Destruct() error
}

// newTestStorage is one edge's storage on the Redis at addr, with a client
// of its own.
func newTestStorage(t testing.TB, addr, prefix string, lockTTL time.Duration) storage {
	t.Helper()
	cfg := cluster.RedisConfig{Addresses: []string{"redis://" + addr}, Timeout: caddy.Duration(2 * time.Second)}
	client, target, err := cfg.Open(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := cluster.NewRedisStorage(client, target.String(), prefix, lockTTL)
	t.Cleanup(func() { _ = client.Close() })
	return s
}

func TestStorageFiles(t *testing.T) {
	addr, _ := harness.StartRedis(t)
	s := newTestStorage(t, addr, "files", time.Second)
	ctx := context.Background()

	if _, err := s.Load(ctx, "certificates/a/a.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "certificates"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.List(ctx, "certificates", true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List of a missing prefix: %v, want fs.ErrNotExist", err)
	}
	if s.Exists(ctx, "certificates") {
		t.Fatal("Exists on an empty storage")
	}
	if err := s.Delete(ctx, "certificates/none"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}

	before := time.Now()
	files := map[string]string{
		"certificates/ca/a.test/a.test.crt":  "cert a",
		"certificates/ca/a.test/a.test.key":  "key a",
		"certificates/ca/b.test/b.test.crt":  "cert b",
		"certificates/ca0/c.test/c.test.crt": "not under certificates/ca",
		"certificatesX":                      "a sibling, not under certificates",
		"acme/ca/users/u/u.json":             "user",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Store(ctx, "certificates/ca/a.test/a.test.crt", []byte("cert a, renewed")); err != nil {
		t.Fatal(err)
	}
	files["certificates/ca/a.test/a.test.crt"] = "cert a, renewed"
	for k, v := range files {
		got, err := s.Load(ctx, k)
		if err != nil || string(got) != v {
			t.Fatalf("Load(%s) = %q, %v; want %q", k, got, err, v)
		}
	}

	info, err := s.Stat(ctx, "certificates/ca/a.test/a.test.crt")
	if err != nil {
		t.Fatal(err)
	}
	if !info.IsTerminal || info.Size != int64(len("cert a, renewed")) || info.Modified.Before(before.Add(-time.Second)) || info.Key != "certificates/ca/a.test/a.test.crt" {
		t.Fatalf("Stat of a file = %+v", info)
	}
	info, err = s.Stat(ctx, "certificates/ca")
	if err != nil || info.IsTerminal || info.Key != "certificates/ca" {
		t.Fatalf("Stat of a directory = %+v, %v", info, err)
	}
	if !s.Exists(ctx, "certificates/ca/b.test") || !s.Exists(ctx, "certificatesX") || s.Exists(ctx, "certificates/c") {
		t.Fatal("Exists is wrong")
	}

	for _, tc := range []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"certificates", false, []string{"certificates/ca", "certificates/ca0"}},
		{"certificates/ca", false, []string{"certificates/ca/a.test", "certificates/ca/b.test"}},
		{"certificates/ca", true, []string{"certificates/ca/a.test", "certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key",
			"certificates/ca/b.test", "certificates/ca/b.test/b.test.crt"}},
		{"certificates/ca/a.test/a.test.crt", true, nil}, // a file has no children
		{"", false, []string{"acme", "certificates", "certificatesX"}},
	} {
		got, err := s.List(ctx, tc.prefix, tc.recursive)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("List(%q, %t) = %q, %v; want %q", tc.prefix, tc.recursive, got, err, tc.want)
		}
	}

	// Deleting a directory deletes everything under it, and only that.
	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Fatal(err)
	}
	for k := range files {
		_, err := s.Load(ctx, k)
		gone := strings.HasPrefix(k, "certificates/ca/")
		if gone != errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after deleting certificates/ca, Load(%s): %v", k, err)
		}
	}
	if got, err := s.List(ctx, "certificates", true); err != nil || !slices.Equal(got, []string{"certificates/ca0", "certificates/ca0/c.test", "certificates/ca0/c.test/c.test.crt"}) {
		t.Fatalf("after the delete, List = %q, %v", got, err)
	}
	if err := s.Delete(ctx, "certificatesX"); err != nil || s.Exists(ctx, "certificatesX") {
		t.Fatalf("Delete of a file: %v", err)
	}
}

// TestStorageLockContention: two edges (each its own client) and several
// goroutines on each take the same lock; at most one is inside at a time
// and every one gets it.
func TestStorageLockContention(t *testing.T) {
	addr, _ := harness.StartRedis(t)
	edges := []storage{newTestStorage(t, addr, "locks", 2*time.Second), newTestStorage(t, addr, "locks", 2*time.Second)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var inside, maxInside, done atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		s := edges[i%2]
		wg.Go(func() {
			if err := s.Lock(ctx, "issue_cert_a.test"); err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			if n > maxInside.Load() {
				maxInside.Store(n)
			}
			time.Sleep(20 * time.Millisecond)
			inside.Add(-1)
			if err := s.Unlock(ctx, "issue_cert_a.test"); err != nil {
				t.Error(err)
			}
			done.Add(1)
		})
	}
	wg.Wait()
	if maxInside.Load() != 1 || done.Load() != 8 {
		t.Fatalf("%d holders at once, %d of 8 got the lock", maxInside.Load(), done.Load())
	}

	// A waiting Lock honours its context.
	if err := edges[0].Lock(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if err := edges[1].Lock(short, "held"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held lock with a short context: %v", err)
	}
	if ok, err := edges[1].TryLock(ctx, "held"); ok || err != nil {
		t.Fatalf("TryLock of a held lock = %t, %v", ok, err)
	}
	if err := edges[0].Unlock(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	if ok, err := edges[1].TryLock(ctx, "held"); !ok || err != nil {
		t.Fatalf("TryLock of a released lock = %t, %v", ok, err)
	}
	if err := edges[1].Unlock(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	if err := edges[1].Unlock(ctx, "held"); err == nil {
		t.Fatal("a second Unlock succeeded")
	}
}

// TestStorageLockRefreshedWhileHeld: a live holder keeps its lock for
// several TTLs.
func TestStorageLockRefreshedWhileHeld(t *testing.T) {
	addr, _ := harness.StartRedis(t)
	ttl := 300 * time.Millisecond
	a, b := newTestStorage(t, addr, "refresh", ttl), newTestStorage(t, addr, "refresh", ttl)
	ctx := context.Background()
	if err := a.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * ttl); time.Now().Before(end); time.Sleep(ttl / 4) {
		if ok, err := b.TryLock(ctx, "l"); ok || err != nil {
			t.Fatalf("another edge took a lock that is held and refreshed: %t, %v", ok, err)
		}
	}
	if err := a.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
}

// TestStorageLockExpiresWhenHolderDies: an edge that dies holding a lock
// (it stops refreshing and never unlocks) blocks the others for at most the
// lock TTL.
func TestStorageLockExpiresWhenHolderDies(t *testing.T) {
	addr, _ := harness.StartRedis(t)
	ttl := 500 * time.Millisecond
	a, b := newTestStorage(t, addr, "expiry", ttl), newTestStorage(t, addr, "expiry", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if err := a.Destruct(); err != nil { // the holder's death: no refresh, no unlock
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > ttl+time.Second {
		t.Fatalf("waited %s for the lock of a dead holder, TTL %s", waited, ttl)
	}
	if err := b.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
}

// TestStorageUnlockReleasesOnlyOwnLock: a holder whose lock expired and
// was taken by another edge does not release the other's lock.
func TestStorageUnlockReleasesOnlyOwnLock(t *testing.T) {
	addr, _ := harness.StartRedis(t)
	a, b := newTestStorage(t, addr, "own", time.Second), newTestStorage(t, addr, "own", time.Second)
	ctx := context.Background()
	if err := a.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	// The lock expires under a (as when Redis was unreachable for a TTL).
	if err := a.DropLock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "l"); !ok || err != nil {
		t.Fatalf("TryLock after expiry = %t, %v", ok, err)
	}
	if err := a.Unlock(ctx, "l"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Unlock of a lock that expired and was taken: %v", err)
	}
	if ok, _ := a.TryLock(ctx, "l"); ok {
		t.Fatal("a's Unlock released b's lock")
	}
	if err := b.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
}

// TestStorageRedisDown: with Redis stopped, a missing answer is an error,
// never fs.ErrNotExist (certmagic would order a new certificate), and
// nothing waits longer than the timeout.
func TestStorageRedisDown(t *testing.T) {
	addr, redis := harness.StartRedis(t)
	s := newTestStorage(t, addr, "down", time.Second)
	ctx := context.Background()
	if err := s.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	harness.KillRedis(t, redis, addr)
	start := time.Now()
	if _, err := s.Load(ctx, "k"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load with Redis down: %v", err)
	}
	if _, err := s.Stat(ctx, "k"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat with Redis down: %v", err)
	}
	if _, err := s.List(ctx, "", true); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List with Redis down: %v", err)
	}
	if err := s.Lock(ctx, "l"); err == nil {
		t.Fatal("Lock with Redis down succeeded")
	}
	if err := s.Store(ctx, "k", []byte("v")); err == nil {
		t.Fatal("Store with Redis down succeeded")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("five operations with Redis down took %s (timeout 2s each)", took)
	}
}

// TestStorageModule: the Caddyfile form, its errors, and two configs with
// the same Redis sharing one client, which survives the first's Cleanup.
func TestStorageModule(t *testing.T) {
	for _, tc := range []struct{ input, wantErr string }{
		{"redis {\n redis redis://127.0.0.1:6379/0\n timeout 2s\n prefix edge\n lock_ttl 20s\n}", ""},
		{"redis {\n}", "storage redis: missing redis line (e.g. redis redis://127.0.0.1:6379/0), at Testfile:2"},
		{"redis redis://127.0.0.1", "unexpected \"redis://127.0.0.1\""},
		{"redis {\n redis redis://127.0.0.1\n timeout soon\n}", "storage redis: timeout \"soon\": want a positive duration such as 5s, at Testfile:3"},
		{"redis {\n redis redis://127.0.0.1\n prefix {a}\n}", "prefix \"{a}\""},
		{"redis {\n redis redis://127.0.0.1\n lock_ttl 1ms\n}", "lock_ttl 1ms must be at least 100ms"},
		{"redis {\n redis redis://127.0.0.1\n colour blue\n}", "storage redis: unknown option \"colour\", at Testfile:3"},
		{"redis {\n redis redis://127.0.0.1\n prefix a b\n}", "prefix takes one argument"},
	} {
		var s cluster.Storage
		err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if tc.wantErr == "" {
			if err != nil || s.Prefix != "edge" || time.Duration(s.Timeout) != 2*time.Second || time.Duration(s.LockTTL) != 20*time.Second || s.Addresses[0] != "redis://127.0.0.1:6379/0" {
				t.Errorf("%q: %+v, %v", tc.input, s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: error %v, want %q", tc.input, err, tc.wantErr)
		}
	}

	addr, _ := harness.StartRedis(t)
	raw := []byte(`{"addresses": ["redis://` + addr + `"], "prefix": "module"}`)
	load := func() (*cluster.Storage, context.CancelFunc) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		var s cluster.Storage
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		if err := s.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return &s, cancel
	}
	first, cancelFirst := load()
	second, cancelSecond := load()
	defer cancelSecond()
	if first.Shared() != second.Shared() {
		t.Fatal("two configs with the same Redis do not share the storage")
	}
	cm, err := second.CertMagicStorage()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Cleanup(); err != nil {
		t.Fatal(err)
	}
	cancelFirst()
	if err := cm.Store(context.Background(), "k", []byte("v")); err != nil {
		t.Fatalf("the storage is closed after the old config's Cleanup: %v", err)
	}
	if s := cm.(interface{ String() string }).String(); !strings.Contains(s, addr) || !strings.Contains(s, "prefix module") {
		t.Fatalf("String() = %q", s)
	}
	if err := second.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// FuzzStorageUnmarshal: any Caddyfile block is accepted or refused with an
// error, never a panic.
func FuzzStorageUnmarshal(f *testing.F) {
	f.Add("redis {\n redis redis://127.0.0.1:6379/0\n timeout 2s\n prefix edge\n}")
	f.Add("redis {\n redis sentinel m redis://127.0.0.1:26379\n lock_ttl 1s\n}")
	f.Add("redis {\n redis cluster redis://127.0.0.1:7000\n}")
	f.Fuzz(func(t *testing.T, input string) {
		var s cluster.Storage
		if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
			if len(s.Addresses) == 0 {
				t.Fatalf("%q accepted without an address", input)
			}
		}
	})
}
