// Package cluster is the glue of cluster mode: the stick_cluster app that
// shares stick tables between edges through Redis, and the Redis storage
// for certificates. How Redis is reached lives in the engine, cluster/redis.
package cluster

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	goredis "github.com/redis/go-redis/v9"

	"github.com/rampart-edge/caddy-rampart/modules/cluster/redis"
)

// RedisConfig says which Redis the edges share. stick_cluster and the
// redis certificate storage use it alike.
type RedisConfig struct {
	// Addresses are redis:// or rediss:// (TLS) URLs, with optional
	// user:password@ and /db: one for a single instance, several for the
	// seed nodes of a Redis Cluster, the Sentinels' when SentinelMaster is
	// set. Placeholders such as {env.REDIS_PASSWORD} are replaced when the
	// config loads; passwords are never logged.
	Addresses []string `json:"addresses,omitempty"`
	// SentinelMaster is the master's name when Addresses are Sentinels.
	SentinelMaster string `json:"sentinel_master,omitempty"`
	// Cluster makes a single address the configuration endpoint of a Redis
	// Cluster; several addresses always are one.
	Cluster bool `json:"cluster,omitempty"`
	// Timeout bounds every Redis operation (dial, write, read, waiting for
	// a pooled connection); nothing is retried.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// UnmarshalAddresses reads the arguments of a `redis` line:
//
//	redis <url>...
//	redis cluster <url>
//	redis sentinel <master> <url>...
func (c *RedisConfig) UnmarshalAddresses(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) > 0 && args[0] == "sentinel" {
		if len(args) < 3 {
			return d.Err("redis sentinel needs a master name and at least one Sentinel address")
		}
		c.SentinelMaster, args = args[1], args[2:]
	} else if len(args) > 0 && args[0] == "cluster" {
		c.Cluster, args = true, args[1:]
	}
	if len(args) == 0 {
		return d.ArgErr()
	}
	c.Addresses = args
	if err := c.target(time.Second).Validate(); err != nil {
		return d.Errf("redis: %v", err)
	}
	return nil
}

// target is the engine's Target with placeholders replaced; fallback is the
// timeout when none is configured.
func (c RedisConfig) target(fallback time.Duration) redis.Target {
	repl := caddy.NewReplacer()
	urls := make([]string, len(c.Addresses))
	for i, a := range c.Addresses {
		urls[i] = repl.ReplaceKnown(a, "")
	}
	timeout := time.Duration(c.Timeout)
	if timeout == 0 {
		timeout = fallback
	}
	return redis.Target{URLs: urls, SentinelMaster: c.SentinelMaster, Cluster: c.Cluster, Timeout: timeout}
}

// Open validates the config and returns a client; fallback is the timeout
// when none is configured.
func (c RedisConfig) Open(fallback time.Duration) (goredis.UniversalClient, redis.Target, error) {
	t := c.target(fallback)
	client, err := t.Open()
	return client, t, err
}
