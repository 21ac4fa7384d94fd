package cluster

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// NewRedisStorage is newRedisStorage for the external tests, which start
// redis-server through integration/harness (it imports this package).
func NewRedisStorage(client goredis.UniversalClient, target, prefix string, lockTTL time.Duration) *redisStorage {
	return newRedisStorage(client, target, prefix, lockTTL, zap.NewNop())
}

// DropLock deletes the lock as its expiry would.
func (s *redisStorage) DropLock(ctx context.Context, name string) error {
	return s.client.Del(ctx, s.locks+name).Err()
}

// Shared is the storage the module shares through the pool.
func (s *Storage) Shared() any { return s.store }
