package scrub

import (
	"bytes"
	"io"
	"math/rand"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// callerOnlyWriter fails the test when it is written to outside a call of
// the BodyRewriter (that is, from another goroutine than the caller's).
type callerOnlyWriter struct {
	t      *testing.T
	inCall atomic.Bool
	out    bytes.Buffer
	stray  atomic.Int64
}

func (w *callerOnlyWriter) Write(p []byte) (int, error) {
	if !w.inCall.Load() {
		w.stray.Add(1)
		return len(p), nil // keep going: the count is the failure
	}
	return w.out.Write(p)
}

// TestBodyRewriterWritesOnCallerGoroutine: every byte of a compressed body
// reaches the destination during Write, Flush or Close on the caller's
// goroutine, never later from the decoder, and Flush between any two
// writes keeps the decoded result exact.
func TestBodyRewriterWritesOnCallerGoroutine(t *testing.T) {
	m, p := testMatcher(t)
	words := []string{"see", "http://10.0.0.10:8080/", "and", "origin.internal.", "lorem", "ipsum", "dolor", "[fd00::10]:8443"}
	text := rand.New(rand.NewSource(1))
	var b strings.Builder
	for b.Len() < 400<<10 {
		b.WriteString(words[text.Intn(len(words))])
		b.WriteString(strconv.Itoa(text.Intn(1000)))
		b.WriteByte(' ')
	}
	plain := []byte(b.String())
	want, _ := m.ReplaceString(string(plain), p)
	for _, coding := range []string{"", "gzip", "deflate", "zstd"} {
		in := plain
		if coding != "" {
			in = compress(t, coding, plain)
		}
		rng := rand.New(rand.NewSource(int64(len(coding))))
		w := &callerOnlyWriter{t: t}
		call := func(f func() error) {
			w.inCall.Store(true)
			if err := f(); err != nil {
				t.Fatalf("%s: %v", coding, err)
			}
			w.inCall.Store(false)
		}
		var br *BodyRewriter
		call(func() (err error) { br, err = NewBodyRewriter(w, coding, m, p); return err })
		for rest := in; len(rest) > 0; {
			k := min(len(rest), 1+rng.Intn(700))
			piece := rest[:k]
			call(func() error { _, err := br.Write(piece); return err })
			rest = rest[k:]
			time.Sleep(100 * time.Microsecond) // room for a stray writer
			if rng.Intn(2) == 0 {
				call(br.Flush)
			}
		}
		call(br.Close)
		if n := w.stray.Load(); n > 0 {
			t.Errorf("%s: %d writes reached the destination outside the caller's calls", coding, n)
		}
		got := w.out.Bytes()
		if coding != "" {
			got = decompress(t, coding, got)
		}
		if string(got) != want {
			t.Errorf("%s: rewritten body differs (%d bytes, want %d)", coding, len(got), len(want))
		}
	}
}

// TestBodyRewriterFlushSendsDecided: after a Flush, what the origin's
// compressor flushed is decodable from what reached the destination.
func TestBodyRewriterFlushSendsDecided(t *testing.T) {
	m, p := testMatcher(t)
	first := "<p>first part http://10.0.0.10:8080/a</p>" + strings.Repeat(" ", 200) // more than the carry
	for _, coding := range []string{"gzip", "zstd", "deflate"} {
		var out bytes.Buffer
		br, err := NewBodyRewriter(&out, coding, m, p)
		if err != nil {
			t.Fatal(err)
		}
		var enc bytes.Buffer
		cw := newTestCompressor(t, coding, &enc)
		cw.Write([]byte(first))
		cw.Flush()
		if _, err := br.Write(enc.Bytes()); err != nil {
			t.Fatal(err)
		}
		if err := br.Flush(); err != nil {
			t.Fatal(err)
		}
		got := partialDecode(coding, out.Bytes())
		if !strings.Contains(got, "first part https://example.com/a") {
			t.Errorf("%s: after Flush the client can decode only %q", coding, got)
		}
		br.Abort(io.ErrUnexpectedEOF)
	}
}
