package stats_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestPageInChromium loads the page of a `rampart_stats admin` site in a
// real headless Chromium (Caddy's admin endpoint refuses browser
// navigations: they carry Sec-Fetch-Mode without an Origin), sends traffic, and sees in the rendered DOM that the counters
// move without a reload; the drain and drain sticky buttons change the
// upstream's state.
// No console errors; a screenshot goes to the test's temp dir (and to
// $RAMPART_STATS_SCREENSHOT when set: that is how docs/stats-page.png is
// made).
func TestPageInChromium(t *testing.T) {
	opts := harness.Chromium(t, chromedp.WindowSize(1100, 640))
	a, b := startOrigin(t, "a"), startOrigin(t, "b")
	e := startEdge(t, "handle /stats* {\n\t\trampart_stats admin\n\t}", a, b)
	for range 6 {
		get(t, e.url+"/?ms=3")
	}

	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	var console []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m.String())
			mu.Unlock()
		}
	}()

	cell := fmt.Sprintf(`#upstreams tr[data-upstream=%q] td.requests`, a.addr)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/stats")); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(cell)); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
		mu.Lock()
		t.Fatalf("the page shows no request count for a: %v\n%s\nconsole: %q", err, text, console)
	}
	// a mark on this document: a reload would lose it
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int]("window.rampartMark = 42")); err != nil {
		t.Fatal(err)
	}
	readCount := func() int {
		t.Helper()
		// the page re-renders its tables on each refresh: query afresh
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("(document.querySelector(%q) || {}).textContent || ''", cell)))
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.ReplaceAll(text, ",", ""))
		if err != nil {
			t.Fatalf("requests cell %q: %v", text, err)
		}
		return n
	}
	before := readCount()
	if before != 3 {
		t.Errorf("the page shows %d requests on a, want 3", before)
	}
	for range 20 {
		get(t, e.url+"/?ms=3")
	}
	waitFor(t, 15*time.Second, "the page's counter to move", func() bool { return readCount() >= before+10 })
	mark, err := chromedp.Run(ctx, chromedp.Evaluate[int]("window.rampartMark || 0"))
	if err != nil || mark != 42 {
		t.Errorf("the page reloaded to update (mark %d, %v)", mark, err)
	}

	// the drain button
	button := fmt.Sprintf(`#upstreams tr[data-upstream=%q] button[data-state="drain"]`, a.addr)
	badge := fmt.Sprintf(`#upstreams tr[data-upstream=%q] .st.drain`, a.addr)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q).click(), true", button))); err != nil {
		t.Fatalf("drain button: %v", err)
	}
	waitFor(t, 10*time.Second, "the drain badge", func() bool {
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("!!document.querySelector(%q)", badge)))
		return err == nil && shown
	})
	for _, u := range stats(t, e.caddy).Upstreams {
		if u.Address == a.addr && u.State != "drain" {
			t.Errorf("after the drain button a is %q", u.State)
		}
	}
	// a drained upstream's "drain sticky" button: keep_sticky
	sticky := fmt.Sprintf(`#upstreams tr[data-upstream=%q] button[data-state="drain-sticky"]`, a.addr)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q).click(), true", sticky))); err != nil {
		t.Fatalf("drain sticky button: %v", err)
	}
	waitFor(t, 10*time.Second, "the drain sticky badge", func() bool {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("(document.querySelector(%q) || {}).textContent || ''", badge)))
		return err == nil && text == "drain sticky"
	})
	for _, u := range stats(t, e.caddy).Upstreams {
		if u.Address == a.addr && (u.State != "drain" || !u.KeepSticky) {
			t.Errorf("after the drain sticky button a is %q, keep_sticky %v", u.State, u.KeepSticky)
		}
	}
	for range 6 {
		get(t, e.url+"/?ms=3")
	}
	time.Sleep(2500 * time.Millisecond) // one more refresh, with rates
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "stats.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("RAMPART_STATS_SCREENSHOT"); out != "" {
		if err := os.WriteFile(out, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))

	mu.Lock()
	defer mu.Unlock()
	for _, m := range console {
		if strings.HasPrefix(m, "error") || strings.HasPrefix(m, "exception") || strings.HasPrefix(m, "warning") {
			t.Errorf("console: %s", m)
		}
	}
}
