package scrub

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nextByDefinition is what Next must return: the first position in
// [from, limit) where matchAt finds a match, trying every position.
func nextByDefinition(m *Matcher, buf []byte, from, limit, lo int) (Match, bool) {
	if m.Empty() {
		return Match{}, false
	}
	for i := from; i < min(limit, len(buf)); i++ {
		if mt, ok := m.matchAt(buf, i, lo); ok {
			return mt, true
		}
	}
	return Match{}, false
}

// scanMatchers are identity sets of every kind: IPv4 (whose other
// notations are looked for behind slashes), IPv6, host names long and
// one byte short, and mixes.
var scanMatchers = [][]string{
	testIDs,
	{"10.0.0.10:8080"},
	{"127.0.0.1:8080"},
	{"0.0.0.0"},
	{"1.0.0.1"},
	{"origin.internal"},
	{"a"},
	{"ab", "10.0.0.1"},
	{"[::1]"},
	{"[fd00::10]:8443", "db"},
	{"::ffff:10.0.0.1"},
	{"Mixed-Case_Host.example"},
}

// spellings are ways an identity (of scanMatchers) appears in pages.
var spellings = []string{
	"10.0.0.10", "10.0.0.10:8080", "http://10.0.0.10:8080/x", "//167772170/", "http://0x0a00000a/", "http://012.0.0.012/",
	"https%3A%2F%2F10.0.0.10%3A8080", "https%253A%252F%252F10.0.0.10%253A8080", "%2F%2F10.10%2F", "//10.10", "//10.0.10",
	"127.0.0.1", "http://127.1:8080/", "//2130706433", "0.0.0.0", "//0/", "//0x0", "1.0.0.1", "//1.1", "[::ffff:10.0.0.10]",
	"[0:0:0:0:0:ffff:a00:a]", "[::1]", "[0000:0000:0000:0000:0000:0000:0000:0001]", "::1", "[fd00::10]:8443", "fd00:0:0:0:0:0:0:10",
	"FD00::10", "[FD00:0000::0010]", "origin.internal", "ORIGIN.Internal.", "wss://origin.internal:443", "a", "A.", "ab", "AB:1",
	"db", "app-7.internal", "mixed-case_host.EXAMPLE", "[::ffff:a00:1]", "10.0.0.1", "ws://10.0.0.1",
}

// fillers are the text between spellings, chosen to stop a scanner often:
// the bytes identities start with, slashes, percent signs, brackets.
var fillers = []string{
	"<p>Lorem ipsum dolor sit amet, 12 34 127 0.1 1.</p>\n", " ", "/", "//", "%", "%2", "%25", "[", "[]", "1", "10.", ".", ":", "a", "x",
	"</a>", "100%", "[1,2]", "0x", "ff", "-", "_", "\n", "https://", "//x", "%2F%2F", "origin", "internal", "fd00:", "::",
}

// randomPage strings together spellings and fillers.
func randomPage(r *rand.Rand, parts int) []byte {
	var b bytes.Buffer
	for range parts {
		if r.Intn(4) == 0 {
			b.WriteString(spellings[r.Intn(len(spellings))])
		} else {
			b.WriteString(fillers[r.Intn(len(fillers))])
		}
	}
	return b.Bytes()
}

// TestNextAgreesWithDefinition compares Next against matchAt tried at
// every position, for every identity set, on pages dense with spellings
// and near misses, at random from, limit and lo (as the streaming
// rewriter calls it).
func TestNextAgreesWithDefinition(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, ids := range scanMatchers {
		m, err := NewMatcher(ids)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for range 400 {
			page := randomPage(r, 1+r.Intn(40))
			from := r.Intn(len(page) + 1)
			limit := from + r.Intn(len(page)-from+1)
			lo := r.Intn(from + 1)
			checkNext(t, m, page, from, limit, lo)
			// and every match of the whole page, as FindAll walks it
			for pos := 0; ; {
				want, ok := nextByDefinition(m, page, pos, len(page), pos)
				checkNext(t, m, page, pos, len(page), pos)
				if !ok {
					break
				}
				found++
				pos = want.End
			}
		}
		if found == 0 {
			t.Errorf("%v: no match in any page: the comparison proved nothing", ids)
		}
	}
}

func checkNext(t *testing.T, m *Matcher, buf []byte, from, limit, lo int) {
	t.Helper()
	want, wok := nextByDefinition(m, buf, from, limit, lo)
	got, gok := m.Next(buf, from, limit, lo)
	if got != want || gok != wok {
		t.Fatalf("identities %v, Next(%q, %d, %d, %d) = %+v %v, want %+v %v", m.ids, buf, from, limit, lo, got, gok, want, wok)
	}
}

// FuzzNext compares Next against matchAt at every position for any input.
func FuzzNext(f *testing.F) {
	f.Add([]byte("http://10.0.0.10:8080/a origin.internal"), uint8(0), uint16(0), uint16(0))
	f.Add([]byte("x //167772170/ [::ffff:a00:a] %2F%2F10.10"), uint8(1), uint16(2), uint16(40))
	f.Add([]byte("a ab db [::1] ::1 1.1 //1.1"), uint8(6), uint16(0), uint16(9))
	f.Fuzz(func(t *testing.T, data []byte, set uint8, from, limit uint16) {
		m, err := NewMatcher(scanMatchers[int(set)%len(scanMatchers)])
		if err != nil {
			t.Fatal(err)
		}
		x, y := int(from)%(len(data)+1), int(limit)%(len(data)+1)
		checkNext(t, m, data, min(x, y), max(x, y), min(x, y))
		checkNext(t, m, data, 0, len(data), 0)
	})
}

// scanPages are 64 KB pages as sites send them: prose with tags (the
// handler benchmark's page), prose with numbers (the end-to-end script's
// page), and a table of figures; each names the origin 20 times.
func scanPages() map[string][]byte {
	r := rand.New(rand.NewSource(2))
	words := strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua")
	link := `<a href="http://10.0.0.10:8080/page">origin</a>` + "\n"
	build := func(para func() string) []byte {
		var b bytes.Buffer
		b.WriteString("<!doctype html><html><head><title>page</title></head><body>\n")
		for n := 0; b.Len() < 64<<10-200; n++ {
			if n%30 == 0 && bytes.Count(b.Bytes(), []byte("10.0.0.10")) < 20 {
				b.WriteString(link)
			}
			b.WriteString(para())
		}
		b.WriteString("</body></html>\n")
		return b.Bytes()
	}
	return map[string][]byte{
		"prose": build(func() string {
			return "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.</p>\n"
		}),
		"numbers": build(func() string {
			p := "<p>"
			for len(p) < 100 {
				p += fmt.Sprintf("%s %d ", words[r.Intn(len(words))], r.Intn(1000))
			}
			return p + "</p>\n"
		}),
		"table": build(func() string {
			return fmt.Sprintf("<tr><td>%d</td><td>%d.%02d</td><td>%d%%</td><td>2026-01-%02d</td></tr>\n", r.Intn(100000), r.Intn(1000), r.Intn(100), r.Intn(100), 1+r.Intn(28))
		}),
	}
}

// BenchmarkNext is the identity scan alone over a 64 KB page with 20
// origin URLs (as RewriteWhole and the stream walk it), per kind of page
// and identity set.
func BenchmarkNext(b *testing.B) {
	for name, page := range scanPages() {
		for _, ids := range [][]string{{"10.0.0.10:8080"}, {"origin.internal", "10.0.0.10:8080"}, testIDs} {
			m, err := NewMatcher(ids)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/%d-ids", name, len(ids)), func(b *testing.B) {
				b.SetBytes(int64(len(page)))
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					n := 0
					for pos := 0; ; n++ {
						mt, ok := m.Next(page, pos, len(page), pos)
						if !ok {
							break
						}
						pos = mt.End
					}
					if n != 20 {
						b.Fatalf("%d matches, want 20", n)
					}
				}
			})
		}
	}
}

// reportCPU reports the process's CPU time per op beside the wall time,
// which on a machine shared with other work counts the waits too; call
// the function it returns when the loop ends.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var u syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
			b.Fatal(err)
		}
		return time.Duration(u.Utime.Nano() + u.Stime.Nano())
	}
	start := cpu()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}
