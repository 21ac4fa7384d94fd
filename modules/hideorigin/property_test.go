package hideorigin

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// identityForms are spellings of the test's origins with what each must
// become for the public site http://example.com.
var identityForms = []struct{ origin, public string }{
	{"http://10.0.0.10:8080", "http://example.com"},
	{"https://origin.internal", "http://example.com"},
	{"HTTP://Origin.Internal", "http://example.com"},
	{"//origin.internal", "//example.com"},
	{"ws://origin.internal", "ws://example.com"},
	{"wss://[fd00::10]:8443", "ws://example.com"},
	{"10.0.0.10:8080", "example.com"},
	{"origin.internal", "example.com"},
	{"[fd00::10]:8443", "example.com"},
	{"[fd00:0:0:0:0:0:0:10]:8443", "example.com"},
}

// fillers are texts that must pass untouched, near misses included.
var fillers = []string{
	"lorem", "ipsum dolor", "<p>", "</a>", `href="/x?y=1"`, "10.0.0.1", "10.0.0.100", "origin.internals",
	"sub.origin.internal", "notorigin.internal", "http://example.org/", "[fd00::11]", "8080", "::", "http://",
	"é日本", "\x00\x01",
}

// propertyCase builds one origin body: what the origin sends and what the
// client must receive (the reference rewrite, assembled piece by piece).
func propertyCase(rng *rand.Rand, size int) (origin, want []byte) {
	var o, w bytes.Buffer
	seps := []string{" ", "\n", `"`, "<", ">", "'", "(", ")", ",", "\t"}
	for o.Len() < size {
		sep := seps[rng.IntN(len(seps))]
		if rng.IntN(4) == 0 {
			f := identityForms[rng.IntN(len(identityForms))]
			path := ""
			if rng.IntN(2) == 0 {
				path = "/p" + strconv.Itoa(rng.IntN(100))
			}
			o.WriteString(f.origin + path + sep)
			w.WriteString(f.public + path + sep)
			continue
		}
		f := fillers[rng.IntN(len(fillers))]
		o.WriteString(f + sep)
		w.WriteString(f + sep)
	}
	return o.Bytes(), w.Bytes()
}

// flushRecorder is the client side of the handler: it keeps the bytes and
// counts flushes, and refuses writes after the handler returned; under
// -race, a write from another goroutine than the handler's is a DATA RACE.
type flushRecorder struct {
	h       http.Header
	status  int
	body    bytes.Buffer
	flushes int
	ops     int // touched by every call: the race detector sees two goroutines
	done    bool
	t       *testing.T
}

func (r *flushRecorder) Header() http.Header { return r.h }
func (r *flushRecorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *flushRecorder) Write(p []byte) (int, error) {
	r.ops++
	if r.done {
		r.t.Error("write after the handler returned")
	}
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(p)
}
func (r *flushRecorder) Flush() { r.ops++; r.flushes++ }

// testEncoders are the origin's compressors, made once (a zstd encoder is
// expensive to make).
var testEncoders = func() map[string]interface {
	io.WriteCloser
	Flush() error
	Reset(io.Writer)
} {
	gw, _ := gzip.NewWriterLevel(nil, 1)
	fw, _ := flate.NewWriter(nil, 1)
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	return map[string]interface {
		io.WriteCloser
		Flush() error
		Reset(io.Writer)
	}{"gzip": gw, "deflate": fw, "zstd": zw}
}()

// testZstdReader decodes the responses.
var testZstdReader, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))

func encodeBody(t *testing.T, coding string, plain []byte, cuts []int) ([]byte, []int) {
	if coding == "" {
		return plain, cuts
	}
	var b bytes.Buffer
	w := testEncoders[coding]
	w.Reset(&b)
	// the origin flushes its compressor where it flushes the connection
	var encCuts []int
	prev := 0
	for _, c := range cuts {
		w.Write(plain[prev:c])
		w.Flush()
		encCuts = append(encCuts, b.Len())
		prev = c
	}
	w.Write(plain[prev:])
	w.Close()
	return b.Bytes(), encCuts
}

func decodeResponse(coding string, body []byte) ([]byte, error) {
	var r io.Reader
	var err error
	switch coding {
	case "":
		return body, nil
	case "gzip":
		r, err = gzip.NewReader(bytes.NewReader(body))
	case "deflate":
		r = flate.NewReader(bytes.NewReader(body))
	case "zstd":
		return testZstdReader.DecodeAll(body, nil)
	default:
		return nil, fmt.Errorf("unexpected coding %q", coding)
	}
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// TestHandlerProperty drives the whole handler as reverse_proxy does:
// random bodies with identities and near misses anywhere, random codings
// (also announced in two header lines), with or without Content-Length,
// written in random pieces with flushes between them, identities cut by
// both. The client must get the reference rewrite byte for byte, with an
// exact Content-Length when one is sent.
func TestHandlerProperty(t *testing.T) {
	h, req := newBenchHandler(t, &Handler{Origins: []string{"10.0.0.10:8080", "origin.internal", "[fd00::10]:8443"}})
	cases := 2000
	if testing.Short() {
		cases = 300
	}
	rng := rand.New(rand.NewPCG(1, uint64(cases)))
	codings := []string{"", "gzip", "zstd", "deflate"}
	for i := range cases {
		size := rng.IntN(4 << 10)
		if rng.IntN(100) == 0 {
			size = 64<<10 + rng.IntN(100<<10) // past the in-memory limit
		}
		plain, want := propertyCase(rng, size)
		// the origin's pieces and flush points
		var cuts []int
		for c := 0; c < len(plain); {
			c += 1 + rng.IntN(1+rng.IntN(3000))
			if c < len(plain) {
				cuts = append(cuts, c)
			}
		}
		coding := codings[rng.IntN(len(codings))]
		body, encCuts := encodeBody(t, coding, plain, cuts)
		withLength := rng.IntN(2) == 0
		twoLines := coding != "" && rng.IntN(4) == 0
		flushEvery := rng.IntN(3) // 0: never, 1: after every piece, 2: at random
		name := fmt.Sprintf("case %d (coding %q, length %v, %d bytes, %d pieces, flush %d)", i, coding, withLength, len(plain), len(cuts)+1, flushEvery)

		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			hd := w.Header()
			hd.Set("Content-Type", "text/html; charset=utf-8")
			switch {
			case twoLines:
				hd["Content-Encoding"] = []string{"identity", coding}
			case coding != "":
				hd.Set("Content-Encoding", coding)
			}
			if withLength {
				hd.Set("Content-Length", strconv.Itoa(len(body)))
			}
			w.WriteHeader(http.StatusOK)
			prev := 0
			for _, c := range append(encCuts, len(body)) {
				if c > prev {
					if _, err := w.Write(body[prev:c]); err != nil {
						return err
					}
				}
				prev = c
				if flushEvery == 1 || flushEvery == 2 && rng.IntN(2) == 0 {
					w.(http.Flusher).Flush()
				}
			}
			return nil
		})
		rec := &flushRecorder{h: http.Header{}, t: t}
		if err := h.ServeHTTP(rec, req, next); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rec.done = true
		if rec.status != http.StatusOK {
			t.Fatalf("%s: status %d: %q", name, rec.status, rec.body.Bytes())
		}
		if got := rec.h.Values("Content-Encoding"); coding == "" && len(got) > 0 || coding != "" && (len(got) != 1 || got[0] != coding) {
			t.Fatalf("%s: Content-Encoding %q", name, got)
		}
		if cl := rec.h.Get("Content-Length"); cl != "" && cl != strconv.Itoa(rec.body.Len()) {
			t.Fatalf("%s: Content-Length %s for %d bytes", name, cl, rec.body.Len())
		}
		got, err := decodeResponse(coding, rec.body.Bytes())
		if err != nil {
			t.Fatalf("%s: decoding the response: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			at := 0
			for at < len(got) && at < len(want) && got[at] == want[at] {
				at++
			}
			t.Fatalf("%s: differs at byte %d:\ngot  %q\nwant %q", name, at, got[max(at-40, 0):min(at+60, len(got))], want[max(at-40, 0):min(at+60, len(want))])
		}
		clear(req.Header)
	}
}
