package cluster

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Storage{})
}

// Defaults of the redis storage.
const (
	defaultStorageTimeout = 5 * time.Second
	defaultStoragePrefix  = "rampart"
	defaultLockTTL        = 10 * time.Second
)

// storages holds one *redisStorage per Redis target, prefix and lock
// expiry, so that a config reload keeps the client and the locks held
// while certificates are being obtained.
var storages = caddy.NewUsagePool()

// Storage is the `caddy.storage.redis` module: certificates, ACME accounts,
// challenge tokens and locks kept in the Redis the edges share, so that the
// edges of a cluster obtain one certificate per name and all serve it.
// Everything lives under keys that begin with {prefix}: one Redis Cluster
// hash slot, so the multi-key operations stay atomic there too.
type Storage struct {
	// RedisConfig says which Redis to reach (the `redis` line) and the
	// per-operation timeout (the `timeout` line, default 5s).
	RedisConfig
	// Prefix begins every key this storage writes, inside a hash tag
	// ({rampart}:...) (default "rampart"). Edges that share certificates
	// use the same prefix; other Caddy clusters on the same Redis use
	// another one.
	Prefix string `json:"prefix,omitempty"`
	// LockTTL is how long a lock outlives its holder (default 10s). The
	// holder refreshes it every third of that while it holds it, so a
	// crashed edge blocks the others for at most this long.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`

	store *redisStorage
	key   string
}

// CaddyModule returns the Caddy module information.
func (Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.redis",
		New: func() caddy.Module { return new(Storage) },
	}
}

// Provision applies the defaults, checks the config and takes the shared
// client for this target (opened without connecting: the first operation
// does).
func (s *Storage) Provision(ctx caddy.Context) error {
	if s.Prefix == "" {
		s.Prefix = defaultStoragePrefix
	}
	if s.LockTTL == 0 {
		s.LockTTL = caddy.Duration(defaultLockTTL)
	}
	if err := s.Validate(); err != nil {
		return err
	}
	target := s.target(defaultStorageTimeout)
	// The key holds the password: it is never logged.
	s.key = fmt.Sprintf("%q %q %t %s %q %s", target.URLs, target.SentinelMaster, target.Cluster, target.Timeout, s.Prefix, time.Duration(s.LockTTL))
	logger := ctx.Logger()
	val, _, err := storages.LoadOrNew(s.key, func() (caddy.Destructor, error) {
		client, _, err := s.Open(defaultStorageTimeout)
		if err != nil {
			return nil, err
		}
		logger.Info("redis storage", zap.String("redis", target.String()), zap.String("prefix", s.Prefix),
			zap.Duration("timeout", target.Timeout), zap.Duration("lock_ttl", time.Duration(s.LockTTL)))
		return newRedisStorage(client, target.String(), s.Prefix, time.Duration(s.LockTTL), logger), nil
	})
	if err != nil {
		return fmt.Errorf("storage redis: %v", err)
	}
	s.store = val.(*redisStorage)
	return nil
}

// Validate checks the values; errors name the option and the value.
func (s *Storage) Validate() error {
	if len(s.Addresses) == 0 {
		return fmt.Errorf("storage redis: missing redis address (e.g. redis redis://127.0.0.1:6379/0)")
	}
	if err := s.target(defaultStorageTimeout).Validate(); err != nil {
		return fmt.Errorf("storage redis: %v", err)
	}
	if strings.ContainsAny(s.Prefix, "{}") || strings.TrimSpace(s.Prefix) != s.Prefix {
		return fmt.Errorf("storage redis: prefix %q: braces and surrounding spaces are not allowed", s.Prefix)
	}
	if s.LockTTL < 0 || (s.LockTTL > 0 && time.Duration(s.LockTTL) < 100*time.Millisecond) {
		return fmt.Errorf("storage redis: lock_ttl %s must be at least 100ms", time.Duration(s.LockTTL))
	}
	return nil
}

// Cleanup releases this config's use of the shared client; the last user
// closes it.
func (s *Storage) Cleanup() error {
	if s.store == nil {
		return nil
	}
	_, err := storages.Delete(s.key)
	return err
}

// CertMagicStorage returns the storage certmagic uses.
func (s *Storage) CertMagicStorage() (certmagic.Storage, error) {
	if s.store == nil {
		return nil, fmt.Errorf("storage redis: not provisioned")
	}
	return s.store, nil
}

// UnmarshalCaddyfile parses the storage global option:
//
//	storage redis {
//	    redis <url>... | redis cluster <url> | redis sentinel <master> <url>...
//	    timeout <duration>
//	    prefix <prefix>
//	    lock_ttl <duration>
//	}
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // redis
	if d.NextArg() {
		return d.Errf("storage redis: unexpected %q (options go in a block)", d.Val())
	}
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "redis" {
			if err := s.UnmarshalAddresses(d); err != nil {
				return err
			}
			continue
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return d.Errf("storage redis: %s takes one argument, got also %q", opt, d.Val())
		}
		switch opt {
		case "prefix":
			s.Prefix = v
		case "timeout", "lock_ttl":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("storage redis: %s %q: want a positive duration such as 5s", opt, v)
			}
			if opt == "timeout" {
				s.Timeout = caddy.Duration(dur)
			} else {
				s.LockTTL = caddy.Duration(dur)
			}
		default:
			return d.Errf("storage redis: unknown option %q", opt)
		}
	}
	if len(s.Addresses) == 0 {
		return d.Err("storage redis: missing redis line (e.g. redis redis://127.0.0.1:6379/0)")
	}
	if err := s.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*Storage)(nil)
	_ caddy.Validator        = (*Storage)(nil)
	_ caddy.CleanerUpper     = (*Storage)(nil)
	_ caddy.StorageConverter = (*Storage)(nil)
	_ caddyfile.Unmarshaler  = (*Storage)(nil)
)
