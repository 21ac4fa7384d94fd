// Package redis is the cluster engine: how the edges reach the Redis they
// share. It imports no Caddy package, so the stick_cluster app, the
// certificate storage and origin_lock's shared replay cache use it alike.
package redis

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Target says which Redis deployment to reach and how long one operation
// may take.
type Target struct {
	// URLs are redis:// or rediss:// (TLS) URLs with optional
	// user:password@ and /db. One URL is a single instance; several are the
	// seed nodes of a Redis Cluster; with SentinelMaster they are the
	// Sentinels. Credentials, TLS and database come from the first URL and
	// must be the same in the others.
	URLs []string
	// SentinelMaster is the name of the master the Sentinels know.
	SentinelMaster string
	// Cluster makes a single URL the configuration endpoint of a Redis
	// Cluster (several URLs always are).
	Cluster bool
	// Timeout bounds every Redis operation: dialling, writing, reading and
	// waiting for a pooled connection. No operation is retried, so a request
	// never waits on Redis for longer than this.
	Timeout time.Duration
}

// Validate checks the URLs without connecting.
func (t Target) Validate() error {
	_, err := t.options()
	return err
}

// Open returns a client for the target. It does not connect: the first
// operation does, bounded by Timeout.
func (t Target) Open() (goredis.UniversalClient, error) {
	opts, err := t.options()
	if err != nil {
		return nil, err
	}
	return goredis.NewUniversalClient(opts), nil
}

// String names the target with every password redacted, for logs.
func (t Target) String() string {
	names := make([]string, len(t.URLs))
	for i, raw := range t.URLs {
		names[i] = Redact(raw)
	}
	s := strings.Join(names, " ")
	if t.SentinelMaster != "" {
		s = "sentinel " + t.SentinelMaster + " " + s
	}
	return s
}

// Redact returns raw with its password replaced by "xxxxx"; a value that
// does not parse as a URL is redacted whole.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid URL>"
	}
	return u.Redacted()
}

// options turns the URLs into go-redis options.
func (t Target) options() (*goredis.UniversalOptions, error) {
	if len(t.URLs) == 0 {
		return nil, errors.New("no Redis address")
	}
	if t.Timeout <= 0 {
		return nil, fmt.Errorf("timeout must be positive, not %v", t.Timeout)
	}
	var first *goredis.Options
	addrs := make([]string, 0, len(t.URLs))
	for _, raw := range t.URLs {
		if _, err := url.Parse(raw); err != nil {
			// url's error quotes the whole address, password included.
			return nil, fmt.Errorf("redis address %s is not a URL", Redact(raw))
		}
		o, err := goredis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("redis address %s: %v", Redact(raw), err)
		}
		if o.Network != "tcp" {
			return nil, fmt.Errorf("redis address %s: only redis:// and rediss:// are supported", Redact(raw))
		}
		if first == nil {
			first = o
		} else if o.Username != first.Username || o.Password != first.Password ||
			o.DB != first.DB || (o.TLSConfig == nil) != (first.TLSConfig == nil) {
			return nil, fmt.Errorf("redis address %s: credentials, database and TLS must match the first address", Redact(raw))
		}
		addrs = append(addrs, o.Addr)
	}
	if (len(addrs) > 1 || t.Cluster) && t.SentinelMaster == "" && first.DB != 0 {
		return nil, fmt.Errorf("redis cluster has only database 0, not %d", first.DB)
	}
	return &goredis.UniversalOptions{
		Addrs:                 addrs,
		MasterName:            t.SentinelMaster,
		IsClusterMode:         t.Cluster && t.SentinelMaster == "",
		Username:              first.Username,
		Password:              first.Password,
		DB:                    first.DB,
		TLSConfig:             first.TLSConfig,
		DialTimeout:           t.Timeout,
		ReadTimeout:           t.Timeout,
		WriteTimeout:          t.Timeout,
		PoolTimeout:           t.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1, // one dial attempt: go-redis would try 5, 100ms apart
		DisableIdentity:       true,
	}, nil
}
