package harness

import (
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// Chromium returns chromedp allocator options for Debian's Chromium
// (found with Peer, so a missing browser skips or fails the test as every
// peer does): headless, no sandbox, no background traffic, a fresh profile
// in the test's temp dir; extra options follow.
func Chromium(t testing.TB, extra ...chromedp.ExecAllocatorOption) []chromedp.ExecAllocatorOption {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Peer(t, "chromium", "chromium")),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
	}
	return append(opts, extra...)
}
