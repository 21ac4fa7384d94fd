package forwardproxy

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy/egress"
)

// Bounds of a block list file.
const (
	maxBlockListBytes   = 64 << 20
	maxBlockListEntries = 2_000_000
)

// blockListWatcher loads the block list file into the policy and reloads it
// when the file's size or modification time changes.
type blockListWatcher struct {
	path   string
	policy *egress.Policy
	logger *zap.Logger
	size   int64
	mtime  time.Time
}

// load reads and parses the file; on error the policy keeps its list.
func (b *blockListWatcher) load() error {
	f, err := os.Open(b.path)
	if err != nil {
		return fmt.Errorf("forward_proxy: block_list: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("forward_proxy: block_list: %v", err)
	}
	if st.Size() > maxBlockListBytes {
		return fmt.Errorf("forward_proxy: block_list %s: %d bytes, more than the %d allowed", b.path, st.Size(), maxBlockListBytes)
	}
	names, err := egress.ParseBlockList(io.LimitReader(f, maxBlockListBytes), maxBlockListEntries)
	if err != nil {
		return fmt.Errorf("forward_proxy: block_list %s: %v", b.path, err)
	}
	b.size, b.mtime = st.Size(), st.ModTime()
	b.policy.SetBlockList(names)
	return nil
}

// changed reports whether the file looks different from the loaded one.
func (b *blockListWatcher) changed() bool {
	st, err := os.Stat(b.path)
	if err != nil {
		return false // a file being replaced: check again next time
	}
	return st.Size() != b.size || !st.ModTime().Equal(b.mtime)
}

// watch checks the file every interval until ctx ends.
func (b *blockListWatcher) watch(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !b.changed() {
			continue
		}
		if err := b.load(); err != nil {
			b.logger.Error("block list not reloaded; the previous list stays in use", zap.Error(err))
			// remember the bad version so that it is reported once
			if st, serr := os.Stat(b.path); serr == nil {
				b.size, b.mtime = st.Size(), st.ModTime()
			}
			continue
		}
		b.logger.Info("block list reloaded", zap.String("file", b.path), zap.Int("names", b.policy.BlockList().Len()))
	}
}
