package hideorigin

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The values of OriginLock.ReplayCluster.
const (
	// ReplayClusterLocal shares the replay cache through stick_cluster and,
	// while Redis cannot be reached, falls back to this instance's own
	// cache (replays to this instance are still refused), logged and
	// metered.
	ReplayClusterLocal = "local"
	// ReplayClusterDeny shares the replay cache through stick_cluster and
	// refuses every request while Redis cannot be reached.
	ReplayClusterDeny = "deny"
)

// replayOutageProbe is how long after a Redis error the shared replay cache
// is considered down before the next request tries Redis again: during an
// outage at most one request a second waits for Redis's timeout.
const replayOutageProbe = time.Second

// replayKeyPrefix begins the Redis key of each nonce seen.
const replayKeyPrefix = "rampart:origin_lock:nonce:"

// Collectors of the shared replay cache.
var (
	metricReplayOutage = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "rampart", Subsystem: "origin_lock", Name: "replay_cluster_outage",
		Help: "1 while origin_lock's shared replay cache cannot reach Redis, else 0.",
	})
	metricReplayUnshared = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "origin_lock", Name: "replay_cluster_unshared_total",
		Help: "Requests origin_lock admitted with only the local replay cache because Redis could not be reached (replay_cache cluster local).",
	})
)

// clusterRedis is what origin_lock uses of the stick_cluster app.
type clusterRedis interface {
	Redis() goredis.UniversalClient
}

// sharedReplays is the replay cache the origin instances share in Redis: a
// nonce is recorded with SET NX and an expiry of the signature's validity
// window, so the second instance to see it refuses it.
type sharedReplays struct {
	client goredis.UniversalClient
	window time.Duration
	deny   bool
	logger *zap.Logger

	mu        sync.Mutex
	downUntil time.Time // no Redis attempt before this
	down      bool
	lastLog   time.Time
	unshared  int // admitted unshared since the last log line
}

// newSharedReplays reaches the stick_cluster app of the config.
func newSharedReplays(ctx caddy.Context, mode string, window time.Duration, logger *zap.Logger) (*sharedReplays, error) {
	app, err := ctx.AppIfConfigured("stick_cluster")
	if err != nil {
		return nil, fmt.Errorf("origin_lock: replay_cache cluster needs the stick_cluster global option: %v", err)
	}
	c, ok := app.(clusterRedis)
	if !ok || c.Redis() == nil {
		return nil, fmt.Errorf("origin_lock: replay_cache cluster: the stick_cluster app (%T) has no Redis client", app)
	}
	return &sharedReplays{client: c.Redis(), window: window, deny: mode == ReplayClusterDeny, logger: logger}, nil
}

// errReplayShared is a nonce another origin instance already admitted.
var errReplayShared = errors.New("signature replayed (seen by another origin instance)")

// errClusterUnavailable is a request refused because the shared replay
// cache cannot be reached (replay_cache cluster deny).
var errClusterUnavailable = errors.New("shared replay cache unreachable")

// check records the nonce in Redis. It returns errReplayShared when another
// instance recorded it first; when Redis cannot be reached it returns nil
// (local) or errClusterUnavailable (deny), and logs the outage at most once
// a second.
func (s *sharedReplays) check(ctx context.Context, nonce []byte) error {
	s.mu.Lock()
	skip := s.down && time.Now().Before(s.downUntil)
	s.mu.Unlock()
	var err error
	if !skip {
		var fresh bool
		fresh, err = s.client.SetNX(ctx, replayKeyPrefix+hex.EncodeToString(nonce), 1, s.window).Result()
		if err == nil {
			s.up()
			if !fresh {
				return errReplayShared
			}
			return nil
		}
	}
	s.outage(err)
	if s.deny {
		return errClusterUnavailable
	}
	metricReplayUnshared.Inc()
	return nil
}

// up ends an outage.
func (s *sharedReplays) up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return
	}
	s.down = false
	metricReplayOutage.Set(0)
	s.logger.Warn("origin_lock: shared replay cache reachable again", zap.Int("admitted_unshared", s.unshared))
	s.unshared = 0
}

// outage records a failed or skipped Redis attempt (err is nil when
// skipped) and logs at most once a second.
func (s *sharedReplays) outage(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if err != nil {
		s.down = true
		s.downUntil = now.Add(replayOutageProbe)
		metricReplayOutage.Set(1)
	}
	if !s.deny {
		s.unshared++
	}
	if err != nil && now.Sub(s.lastLog) >= time.Second {
		s.lastLog = now
		msg := "origin_lock: shared replay cache unreachable; admitting with the local replay cache only (a replay to another origin instance is not detected)"
		if s.deny {
			msg = "origin_lock: shared replay cache unreachable; refusing signed requests (replay_cache cluster deny)"
		}
		s.logger.Error(msg, zap.Int("admitted_unshared", s.unshared), zap.Error(err))
	}
}

// unmarshalReplayCluster reads the rest of `replay_cache cluster [local|deny]`.
func (l *OriginLock) unmarshalReplayCluster(d *caddyfile.Dispenser) error {
	l.ReplayCluster = ReplayClusterLocal
	if d.NextArg() {
		l.ReplayCluster = d.Val()
		if l.ReplayCluster != ReplayClusterLocal && l.ReplayCluster != ReplayClusterDeny {
			return d.Errf("origin_lock: replay_cache cluster %q: want local or deny", d.Val())
		}
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}
