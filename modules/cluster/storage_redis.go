package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisStorage is certmagic.Storage on Redis. With prefix p, a file key k
// is the hash {p}:f:k (fields v: the value, m: modification time in Unix
// nanoseconds), the sorted set {p}:index lists every file key
// (lexicographically, for directory listings) and the string {p}:lock:name
// holds a lock holder's random token with the lock's expiry.
type redisStorage struct {
	client  goredis.UniversalClient
	name    string // target and prefix, passwords redacted
	files   string // "{p}:f:"
	index   string // "{p}:index"
	locks   string // "{p}:lock:"
	lockTTL time.Duration
	logger  *zap.Logger

	mu   sync.Mutex
	held map[string]*heldLock // by lock name
}

// heldLock is a lock this process holds: its token and the goroutine that
// keeps it from expiring.
type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

// newRedisStorage returns the storage; target names the Redis in String.
func newRedisStorage(client goredis.UniversalClient, target, prefix string, lockTTL time.Duration, logger *zap.Logger) *redisStorage {
	tag := "{" + prefix + "}"
	return &redisStorage{
		client:  client,
		name:    "redis " + target + " prefix " + prefix,
		files:   tag + ":f:",
		index:   tag + ":index",
		locks:   tag + ":lock:",
		lockTTL: lockTTL,
		logger:  logger,
		held:    make(map[string]*heldLock),
	}
}

// Destruct stops refreshing the locks still held (they expire after the
// lock TTL) and closes the client, when the last config using it is gone.
func (s *redisStorage) Destruct() error {
	s.mu.Lock()
	for name, h := range s.held {
		close(h.stop)
		<-h.done
		delete(s.held, name)
	}
	s.mu.Unlock()
	return s.client.Close()
}

// String names the storage in certmagic's logs, without passwords.
func (s *redisStorage) String() string { return s.name }

// notExist is the error for a missing key, fs.ErrNotExist as certmagic
// expects.
func notExist(op, key string) error {
	return &fs.PathError{Op: op, Path: key, Err: fs.ErrNotExist}
}

// below returns the ZRANGEBYLEX bounds of the keys under the directory
// prefix ("" is the root).
func below(prefix string) (lo, hi string) {
	if prefix == "" {
		return "-", "+"
	}
	// '0' is the byte after '/'.
	return "[" + prefix + "/", "(" + prefix + "0"
}

// Store puts value at key, creating or overwriting it.
func (s *redisStorage) Store(ctx context.Context, key string, value []byte) error {
	_, err := s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.files+key, "v", value, "m", strconv.FormatInt(time.Now().UnixNano(), 10))
		p.ZAdd(ctx, s.index, goredis.Z{Member: key})
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing %s in %s: %w", key, s.name, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *redisStorage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.client.HGet(ctx, s.files+key, "v").Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, notExist("load", key)
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s from %s: %w", key, s.name, err)
	}
	return v, nil
}

// deleteScript deletes the file KEYS[1] and every file under the
// directory ARGV[1] (bounds ARGV[2], ARGV[3]) in one step. Every key is in
// the {prefix} hash slot.
var deleteScript = goredis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local under = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3])
for _, k in ipairs(under) do
	redis.call('DEL', ARGV[4] .. k)
	redis.call('ZREM', KEYS[2], k)
end
return #under`)

// Delete removes key and, if it is a directory, everything under it. A
// missing key is not an error.
func (s *redisStorage) Delete(ctx context.Context, key string) error {
	lo, hi := below(key)
	if err := deleteScript.Run(ctx, s.client, []string{s.files + key, s.index}, key, lo, hi, s.files).Err(); err != nil {
		return fmt.Errorf("deleting %s from %s: %w", key, s.name, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory; false when Redis
// cannot tell.
func (s *redisStorage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// Stat describes key: a file with its size and modification time, or a
// directory (IsTerminal false); an error wrapping fs.ErrNotExist when it is
// neither.
func (s *redisStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	lo, hi := below(key)
	var modified *goredis.StringCmd
	var size *goredis.IntCmd
	var under *goredis.StringSliceCmd
	_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		modified = p.HGet(ctx, s.files+key, "m")
		size = p.HStrLen(ctx, s.files+key, "v")
		under = p.ZRangeByLex(ctx, s.index, &goredis.ZRangeBy{Min: lo, Max: hi, Count: 1})
		return nil
	})
	for _, e := range []error{err, modified.Err(), under.Err()} {
		if e != nil && !errors.Is(e, goredis.Nil) {
			return certmagic.KeyInfo{}, fmt.Errorf("stat %s in %s: %w", key, s.name, e)
		}
	}
	if m, err := modified.Int64(); err == nil {
		return certmagic.KeyInfo{Key: key, Modified: time.Unix(0, m), Size: size.Val(), IsTerminal: true}, nil
	}
	if len(under.Val()) > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, notExist("stat", key)
}

// List returns the keys under the directory prefix: its direct children
// (files and directories), or with recursive every file and directory
// below it, in lexicographic order. A file has no children; a prefix that
// is neither is an error wrapping fs.ErrNotExist.
func (s *redisStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	lo, hi := below(prefix)
	files, err := s.client.ZRangeByLex(ctx, s.index, &goredis.ZRangeBy{Min: lo, Max: hi}).Result()
	if err != nil {
		return nil, fmt.Errorf("listing %s in %s: %w", prefix, s.name, err)
	}
	if len(files) == 0 {
		if prefix != "" {
			n, err := s.client.Exists(ctx, s.files+prefix).Result()
			if err != nil {
				return nil, fmt.Errorf("listing %s in %s: %w", prefix, s.name, err)
			}
			if n == 1 {
				return nil, nil
			}
		}
		return nil, notExist("list", prefix)
	}
	var keys []string
	seen := make(map[string]bool)
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	start := len(prefix) + 1
	if prefix == "" {
		start = 0
	}
	for _, f := range files {
		rest := f[start:]
		if !recursive {
			first, _, _ := strings.Cut(rest, "/")
			add(path.Join(prefix, first))
			continue
		}
		// Every directory on the way down, then the file.
		for i := 0; i < len(rest); i++ {
			if rest[i] == '/' {
				add(path.Join(prefix, rest[:i]))
			}
		}
		add(f)
	}
	return keys, nil
}

// refreshScript extends the lock KEYS[1] to ARGV[2] ms if it still holds
// the token ARGV[1].
var refreshScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// unlockScript deletes the lock KEYS[1] if it still holds the token
// ARGV[1]: a holder whose lock expired and was taken by another edge does
// not release the other's lock.
var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0`)

// lockPoll is how often a waiting Lock tries again.
func (s *redisStorage) lockPoll() time.Duration {
	return min(max(s.lockTTL/20, 50*time.Millisecond), time.Second)
}

// Lock takes the named lock, waiting while another holder (this process or
// another edge) has it, until ctx ends. The lock expires lockTTL after its
// holder stops refreshing it (a crash), so a dead edge never blocks the
// others for longer. An error reaching Redis ends the wait with that error.
func (s *redisStorage) Lock(ctx context.Context, name string) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
		ok, err := s.TryLock(ctx, name)
		if err != nil && ctx.Err() != nil {
			return ctx.Err() // the deadline ended the attempt
		}
		if err != nil || ok {
			return err
		}
		poll.Reset(s.lockPoll())
	}
}

// TryLock takes the named lock if it is free and reports whether it did.
func (s *redisStorage) TryLock(ctx context.Context, name string) (bool, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	ok, err := s.client.SetNX(ctx, s.locks+name, token, s.lockTTL).Result()
	if err != nil {
		return false, fmt.Errorf("taking lock %s in %s: %w", name, s.name, err)
	}
	if !ok {
		return false, nil
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	// A lock of this process under the same name expired while held (its
	// key was gone): stop refreshing it.
	if old := s.held[name]; old != nil {
		close(old.stop)
		<-old.done
	}
	s.held[name] = h
	s.mu.Unlock()
	go s.keep(name, h)
	return true, nil
}

// keep refreshes a held lock every third of its TTL until Unlock, so a
// live holder keeps it however long its work takes. A refresh that finds
// the lock taken by someone else (it expired while Redis was unreachable)
// logs it and stops.
func (s *redisStorage) keep(name string, h *heldLock) {
	defer close(h.done)
	tick := time.NewTicker(s.lockTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.lockTTL/3)
		n, err := refreshScript.Run(ctx, s.client, []string{s.locks + name}, h.token, s.lockTTL.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			s.logger.Warn("refreshing a storage lock failed; it expires unless a later refresh succeeds",
				zap.String("lock", name), zap.Duration("lock_ttl", s.lockTTL), zap.Error(err))
		case n == 0:
			s.logger.Error("a storage lock expired while held: another edge may be doing the same work",
				zap.String("lock", name))
			return
		}
	}
}

// Unlock releases the named lock if this process still holds it. It is an
// error when the lock expired while held (another edge may have taken it,
// and is left alone) or when Redis cannot be reached (the lock then expires
// after its TTL).
func (s *redisStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlocking %s in %s: this process does not hold it", name, s.name)
	}
	close(h.stop)
	<-h.done
	n, err := unlockScript.Run(ctx, s.client, []string{s.locks + name}, h.token).Int()
	if err != nil {
		return fmt.Errorf("unlocking %s in %s (it expires after %s): %w", name, s.name, s.lockTTL, err)
	}
	if n == 0 {
		return fmt.Errorf("unlocking %s in %s: the lock had expired while held", name, s.name)
	}
	return nil
}

// Interface guards
var (
	_ certmagic.Storage   = (*redisStorage)(nil)
	_ certmagic.TryLocker = (*redisStorage)(nil)
)
