package cluster

import (
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// The on_outage policies.
const (
	// OutageLocal keeps counting locally and serving while Redis is away.
	OutageLocal = "local"
	// OutageDeny refuses what a shared table's rules would judge while
	// Redis is away.
	OutageDeny = "deny"
)

// Defaults of the stick_cluster app.
const (
	defaultTimeout = 50 * time.Millisecond
	defaultSync    = 100 * time.Millisecond
)

// App is the `stick_cluster` app: the Redis that the edges of a cluster
// share, and this edge's name in it. Shared stick tables, origin_lock's
// shared replay cache and the Redis certificate storage reach its client
// through the config context (AppIfConfigured("stick_cluster")) by an
// interface of their own, so their glue does not import this package.
type App struct {
	// RedisConfig says which Redis to reach (the `redis` line) and the
	// per-operation timeout (the `timeout` line, default 50ms).
	RedisConfig
	// NodeID names this edge in the cluster (default: the host name). Every
	// edge needs its own; the state of an id that stops syncing disappears
	// from the cluster's sums within 3 × sync and from Redis at expiry.
	NodeID string `json:"node,omitempty"`
	// Sync is how often an edge pushes its deltas to Redis and pulls the
	// cluster totals of async shared tables (default 100ms).
	Sync caddy.Duration `json:"sync,omitempty"`
	// OnOutage is what shared tables do while Redis cannot be reached:
	// "local" (default) keeps counting locally and serving, "deny" refuses
	// what the table's rules would judge.
	OnOutage string `json:"on_outage,omitempty"`

	client goredis.UniversalClient
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "stick_cluster",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision applies the defaults, checks the config and opens the Redis
// client (without connecting: the first operation does).
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if a.Timeout == 0 {
		a.Timeout = caddy.Duration(defaultTimeout)
	}
	if a.Sync == 0 {
		a.Sync = caddy.Duration(defaultSync)
	}
	if a.OnOutage == "" {
		a.OnOutage = OutageLocal
	}
	if a.NodeID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return fmt.Errorf("stick_cluster: no node given and the host name is unknown (%v): set node", err)
		}
		a.NodeID = host
	}
	if err := a.Validate(); err != nil {
		return err
	}
	client, target, err := a.RedisConfig.Open(defaultTimeout)
	if err != nil {
		return fmt.Errorf("stick_cluster: redis: %v", err)
	}
	a.client = client
	a.logger.Info("stick cluster", zap.String("redis", target.String()), zap.String("node", a.NodeID),
		zap.Duration("sync", time.Duration(a.Sync)), zap.Duration("timeout", time.Duration(a.Timeout)), zap.String("on_outage", a.OnOutage))
	return nil
}

// Validate checks the values; errors name the option and the value.
func (a *App) Validate() error {
	if len(a.Addresses) == 0 {
		return fmt.Errorf("stick_cluster: missing redis address (e.g. redis redis://127.0.0.1:6379/0)")
	}
	if a.Timeout < 0 {
		return fmt.Errorf("stick_cluster: timeout %s must be positive", time.Duration(a.Timeout))
	}
	if a.Sync < 0 || (a.Sync > 0 && time.Duration(a.Sync) < time.Millisecond) {
		return fmt.Errorf("stick_cluster: sync %s must be at least 1ms", time.Duration(a.Sync))
	}
	if a.OnOutage != "" && a.OnOutage != OutageLocal && a.OnOutage != OutageDeny {
		return fmt.Errorf("stick_cluster: on_outage %q: want local or deny", a.OnOutage)
	}
	for _, c := range a.NodeID {
		if c <= ' ' || c == '{' || c == '}' || c == '@' || c == ':' {
			return fmt.Errorf("stick_cluster: node %q: spaces, control characters and { } @ : are not allowed", a.NodeID)
		}
	}
	return nil
}

// Start implements caddy.App.
func (a *App) Start() error { return nil }

// Stop implements caddy.App.
func (a *App) Stop() error { return nil }

// Cleanup closes the Redis client.
func (a *App) Cleanup() error {
	if a.client != nil {
		return a.client.Close()
	}
	return nil
}

// Redis returns the client of the shared Redis. Every operation on it is
// bounded by the configured timeout and never retried.
func (a *App) Redis() goredis.UniversalClient { return a.client }

// Node returns this edge's id in the cluster.
func (a *App) Node() string { return a.NodeID }

// SyncInterval returns how often async shared tables sync.
func (a *App) SyncInterval() time.Duration { return time.Duration(a.Sync) }

// OpTimeout returns the per-operation timeout: how long a request of a
// strict shared table waits for Redis at most.
func (a *App) OpTimeout() time.Duration { return time.Duration(a.Timeout) }

// DenyOnOutage reports whether shared tables refuse what their rules would
// judge while Redis cannot be reached (on_outage deny).
func (a *App) DenyOnOutage() bool { return a.OnOutage == OutageDeny }

// UnmarshalCaddyfile parses the global option:
//
//	stick_cluster {
//	    redis <url>... | redis cluster <url> | redis sentinel <master> <url>...
//	    node <id>
//	    sync <duration>
//	    timeout <duration>
//	    on_outage local|deny
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // stick_cluster
	if d.NextArg() {
		return d.Errf("stick_cluster: unexpected %q (options go in a block)", d.Val())
	}
	for d.NextBlock(0) {
		opt := d.Val()
		one := func() (string, error) {
			if !d.NextArg() {
				return "", d.ArgErr()
			}
			v := d.Val()
			if d.NextArg() {
				return "", d.Errf("stick_cluster: %s takes one argument, got also %q", opt, d.Val())
			}
			return v, nil
		}
		switch opt {
		case "redis":
			if err := a.UnmarshalAddresses(d); err != nil {
				return err
			}
		case "node":
			v, err := one()
			if err != nil {
				return err
			}
			a.NodeID = v
		case "sync", "timeout":
			v, err := one()
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("stick_cluster: %s %q: want a positive duration such as 100ms", opt, v)
			}
			if opt == "sync" {
				a.Sync = caddy.Duration(dur)
			} else {
				a.Timeout = caddy.Duration(dur)
			}
		case "on_outage":
			v, err := one()
			if err != nil {
				return err
			}
			a.OnOutage = v
		default:
			return d.Errf("stick_cluster: unknown option %q (want redis, node, sync, timeout, on_outage)", opt)
		}
	}
	// The rules live in Validate (JSON configs get them too); run them here
	// so that the error points at the user's block.
	if err := a.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

var (
	_ caddy.App             = (*App)(nil)
	_ caddy.Provisioner     = (*App)(nil)
	_ caddy.Validator       = (*App)(nil)
	_ caddy.CleanerUpper    = (*App)(nil)
	_ caddyfile.Unmarshaler = (*App)(nil)
)
