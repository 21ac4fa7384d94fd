package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestParsePattern(t *testing.T) {
	cases := []struct {
		in      string
		kind    Kind
		match   []string
		nomatch []string
		err     bool
	}{
		{in: "App.Example.NET", kind: Exact, match: []string{"app.example.net", "APP.example.net."}, nomatch: []string{"x.app.example.net", ""}},
		{in: "*.tenant.example.net", kind: Wildcard, match: []string{"a.tenant.example.net"}, nomatch: []string{"tenant.example.net", "a.b.tenant.example.net", ".tenant.example.net"}},
		{in: `~^api-[0-9]+\.example\.net$`, kind: Regexp, match: []string{"api-12.example.net"}, nomatch: []string{"api-x.example.net"}},
		{in: "", err: true},
		{in: "~", err: true},
		{in: "~(", err: true},
		{in: "*.net", err: true},
		{in: "a..b", err: true},
		{in: "-a.b", err: true},
		{in: "a b.c", err: true},
		{in: "*.*.b.c", err: true},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.in)
		if c.err {
			if err == nil {
				t.Errorf("ParsePattern(%q) = %+v, want an error", c.in, p)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePattern(%q): %v", c.in, err)
			continue
		}
		if p.Kind != c.kind {
			t.Errorf("ParsePattern(%q).Kind = %v, want %v", c.in, p.Kind, c.kind)
		}
		for _, m := range c.match {
			if !p.Match(m) {
				t.Errorf("%q does not match %q", c.in, m)
			}
		}
		for _, m := range c.nomatch {
			if p.Match(m) {
				t.Errorf("%q matches %q", c.in, m)
			}
		}
	}
	e, _ := ParsePattern("a.b.c")
	w2, _ := ParsePattern("*.b.c.d")
	w1, _ := ParsePattern("*.c.d")
	r, _ := ParsePattern("~x")
	if !(e.Specificity() < w2.Specificity() && w2.Specificity() < w1.Specificity() && w1.Specificity() < r.Specificity()) {
		t.Error("specificity order is not exact < longer wildcard < shorter wildcard < regexp")
	}
}

// clientHello captures the first flight of a real crypto/tls client.
func clientHello(t testing.TB, name string, alpn []string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: name, NextProtos: alpn, InsecureSkipVerify: true})
		_ = c.Handshake()
	}()
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	_ = b.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, err := b.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if _, perr := ParseClientHello(buf); perr != ErrNeedMore || err != nil {
			break
		}
	}
	a.Close()
	b.Close()
	return buf
}

func TestParseClientHello(t *testing.T) {
	raw := clientHello(t, "Pass.Test", []string{"h2", "http/1.1"})
	h, err := ParseClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "pass.test" || len(h.ALPN) != 2 || h.ALPN[0] != "h2" || h.ALPN[1] != "http/1.1" {
		t.Fatalf("got %+v", h)
	}
	for i := range len(raw) - 1 {
		if _, err := ParseClientHello(raw[:i]); err != ErrNeedMore {
			t.Fatalf("prefix of %d bytes: %v, want ErrNeedMore", i, err)
		}
	}
	// the same handshake split over two records parses the same
	body := raw[5:]
	split := append([]byte{22, 3, 1, 0, 40}, body[:40]...)
	split = append(split, 22, 3, 1, byte((len(body)-40)>>8), byte(len(body)-40))
	split = append(split, body[40:]...)
	h2, err := ParseClientHello(split)
	if err != nil || h2.ServerName != "pass.test" {
		t.Fatalf("split records: %+v %v", h2, err)
	}
	if _, err := ParseClientHello([]byte("GET / HTTP/1.1\r\n")); err != ErrNotTLS {
		t.Fatalf("HTTP request: %v, want ErrNotTLS", err)
	}
	noSNI := clientHello(t, "", nil)
	if h, err := ParseClientHello(noSNI); err != nil || h.ServerName != "" {
		t.Fatalf("no SNI: %+v %v", h, err)
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"app.example.net", "*.tenant.example.net", `~^api-[0-9]+\.example\.net$`, "", "~", "*.", "a..b", "xn--bcher-kva.example"} {
		f.Add(s, "api-1.example.net")
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		again, err := ParsePattern(p.String())
		if err != nil || again.Kind != p.Kind || again.Value != p.Value {
			t.Fatalf("pattern %q does not round-trip: %+v %v", pattern, again, err)
		}
		if p.Kind == Exact && !p.Match(p.Value) {
			t.Fatalf("exact pattern %q does not match itself", p.Value)
		}
		_ = p.Match(name)
	})
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(clientHello(f, "pass.test", []string{"h2"}))
	f.Add(clientHello(f, "", nil))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		if err != nil && !errors.Is(err, ErrNeedMore) && !errors.Is(err, ErrNotTLS) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unexpected error %v", err)
		}
		if err == nil && len(h.ServerName) > MaxHelloLength {
			t.Fatal("server name longer than the hello")
		}
	})
}

// tcpPair returns two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

func TestRelayHalfCloseAndCounts(t *testing.T) {
	client, edgeIn := tcpPair(t)
	edgeOut, backend := tcpPair(t)
	defer client.Close()
	defer backend.Close()
	done := make(chan RelayResult, 1)
	go func() {
		done <- Relay(edgeIn, edgeIn, edgeOut, RelayOptions{IdleTimeout: 5 * time.Second, Chunk: 4096})
	}()

	payload := bytes.Repeat([]byte("x"), 100_000)
	go func() { _, _ = client.Write(payload); _ = client.CloseWrite() }()
	got, err := io.ReadAll(backend) // ends when the client's half-close arrives
	if err != nil || len(got) != len(payload) {
		t.Fatalf("backend read %d bytes, %v", len(got), err)
	}
	// the backend can still answer after the client's half-close
	if _, err := backend.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	_ = backend.CloseWrite()
	answer, err := io.ReadAll(client)
	if err != nil || string(answer) != "answer" {
		t.Fatalf("client read %q, %v", answer, err)
	}
	res := <-done
	if res.Up != int64(len(payload)) || res.Down != 6 || res.Idle {
		t.Fatalf("result %+v", res)
	}
}

func TestRelayIdleTimeout(t *testing.T) {
	client, edgeIn := tcpPair(t)
	edgeOut, backend := tcpPair(t)
	defer client.Close()
	defer backend.Close()
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	// traffic in one direction only keeps the relay alive past the timeout
	go func() {
		defer wg.Done()
		for range 6 {
			_, _ = backend.Write([]byte("tick"))
			time.Sleep(50 * time.Millisecond)
		}
	}()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	res := Relay(edgeIn, edgeIn, edgeOut, RelayOptions{IdleTimeout: 150 * time.Millisecond})
	wg.Wait()
	if !res.Idle || res.Down != 24 {
		t.Fatalf("result %+v, want idle after 24 bytes down", res)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("relay ended after %v although bytes kept moving for 300ms", el)
	}
}

func TestBalancer(t *testing.T) {
	a, b, c := &Upstream{Addr: "a"}, &Upstream{Addr: "b"}, &Upstream{Addr: "c"}
	bal := &Balancer{Policy: RoundRobin, Upstreams: []*Upstream{a, b, c}}
	seen := map[string]int{}
	for range 30 {
		seen[bal.Pick(netip.Addr{}, nil).Addr]++
	}
	if seen["a"] != 10 || seen["b"] != 10 || seen["c"] != 10 {
		t.Fatalf("round robin spread %v", seen)
	}
	b.SetHealthy(false)
	for range 10 {
		if bal.Pick(netip.Addr{}, nil) == b {
			t.Fatal("picked an unhealthy upstream")
		}
	}
	bal.Policy = LeastConn
	rel := a.Acquire()
	if u := bal.Pick(netip.Addr{}, nil); u != c {
		t.Fatalf("least_conn picked %s, want c", u.Addr)
	}
	rel()
	rel()
	if a.Active() != 0 {
		t.Fatal("release counted twice")
	}
	bal.Policy = IPHash
	if bal.Pick(netip.MustParseAddr("192.0.2.1"), nil) != bal.Pick(netip.MustParseAddr("192.0.2.1"), nil) {
		t.Fatal("ip_hash is not stable")
	}
	bal.Policy = First
	if bal.Pick(netip.Addr{}, []*Upstream{a}) != c {
		t.Fatal("first did not skip the excluded upstream")
	}
	c.SetHealthy(false)
	if bal.Pick(netip.Addr{}, []*Upstream{a}) != nil {
		t.Fatal("picked although nothing is usable")
	}
	if _, err := ParsePolicy("weighted"); err == nil {
		t.Fatal("unknown policy accepted")
	}
}

func TestHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	u := &Upstream{Addr: ln.Addr().String()}
	var changes []bool
	hc := &HealthCheck{Timeout: time.Second, Passes: 2, Fails: 2, OnChange: func(_ *Upstream, ok bool) { changes = append(changes, ok) }}
	ctx := context.Background()
	hc.Round(ctx, []*Upstream{u})
	ln.Close()
	hc.Round(ctx, []*Upstream{u})
	if !u.Healthy() {
		t.Fatal("one failure took the upstream out (fails 2)")
	}
	hc.Round(ctx, []*Upstream{u})
	if u.Healthy() {
		t.Fatal("two failures did not take the upstream out")
	}
	ln2, err := net.Listen("tcp", u.Addr)
	if err != nil {
		t.Skipf("port reuse: %v", err)
	}
	defer ln2.Close()
	hc.Round(ctx, []*Upstream{u})
	hc.Round(ctx, []*Upstream{u})
	if !u.Healthy() || len(changes) != 2 || changes[0] || !changes[1] {
		t.Fatalf("healthy=%v changes=%v", u.Healthy(), changes)
	}
}

// TestCheckStats: the last check's time and result, the consecutive failed
// checks (counted on while down, reset by a success) and every failed check.
func TestCheckStats(t *testing.T) {
	u := &Upstream{Addr: "192.0.2.1:443"}
	if c := u.Checks(); !c.LastAt.IsZero() || c.Fails != 0 || c.FailsTotal != 0 {
		t.Fatalf("before any check: %+v", c)
	}
	hc := &HealthCheck{Fails: 2}
	start := time.Now()
	hc.Record(u, true)
	for range 3 {
		hc.Record(u, false)
	}
	if c := u.Checks(); c.LastOK || c.Fails != 3 || c.FailsTotal != 3 || c.LastAt.Before(start) || u.Healthy() {
		t.Fatalf("after 3 failures: %+v healthy=%v", c, u.Healthy())
	}
	hc.Record(u, true)
	if c := u.Checks(); !c.LastOK || c.Fails != 0 || c.FailsTotal != 3 {
		t.Fatalf("after a success: %+v", c)
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	raw := clientHello(b, "pass.test", []string{"h2", "http/1.1"})
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := ParseClientHello(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPatternMatch(b *testing.B) {
	p, _ := ParsePattern("*.tenant.example.net")
	b.ReportAllocs()
	for b.Loop() {
		p.Match("a.tenant.example.net")
	}
}

// BenchmarkRelay moves 64 MiB per op between loopback TCP connections
// through Relay (splice on Linux); compare with BenchmarkCopyUserspace.
func BenchmarkRelay(b *testing.B) {
	benchRelay(b, func(dst, src net.Conn) {
		Relay(src, src, dst, RelayOptions{IdleTimeout: 10 * time.Second})
	})
}

// BenchmarkCopyUserspace is the same transfer with a plain buffered copy
// through wrappers that hide the TCP type (what a wrapping net.Conn costs).
func BenchmarkCopyUserspace(b *testing.B) {
	benchRelay(b, func(dst, src net.Conn) {
		type hide struct{ net.Conn }
		go func() { _, _ = io.Copy(hide{src}, hide{dst}); _ = src.(*net.TCPConn).CloseWrite() }()
		_, _ = io.Copy(hide{dst}, hide{src})
		_ = dst.(*net.TCPConn).CloseWrite()
	})
}

func benchRelay(b *testing.B, relay func(dst, src net.Conn)) {
	const size = 64 << 20
	b.ReportAllocs()
	b.SetBytes(size)
	chunk := make([]byte, 256<<10)
	for b.Loop() {
		client, edgeIn := tcpPair(b)
		edgeOut, backend := tcpPair(b)
		go relay(edgeOut, edgeIn)
		go func() {
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := client.Write(chunk); err != nil {
					return
				}
			}
			_ = client.CloseWrite()
		}()
		n, _ := io.Copy(io.Discard, backend)
		if n != size {
			b.Fatalf("moved %d bytes", n)
		}
		_ = backend.Close()
		_ = client.Close()
		_ = edgeIn.Close()
		_ = edgeOut.Close()
	}
}

// BenchmarkRelayShort relays one short exchange per op (2 KB up, 4 KB
// down, as a TLS handshake and a small answer) between new loopback TCP
// connections: the per-connection cost of the relay.
func BenchmarkRelayShort(b *testing.B) {
	b.ReportAllocs()
	up, down := make([]byte, 2<<10), make([]byte, 4<<10)
	for b.Loop() {
		client, edgeIn := tcpPair(b)
		edgeOut, backend := tcpPair(b)
		done := make(chan struct{})
		go func() {
			Relay(edgeIn, edgeIn, edgeOut, RelayOptions{IdleTimeout: 10 * time.Second})
			close(done)
		}()
		go func() {
			_, _ = io.ReadFull(backend, up[:len(up):len(up)])
			_, _ = backend.Write(down)
			_ = backend.CloseWrite()
		}()
		_, _ = client.Write(up)
		_ = client.CloseWrite()
		if n, _ := io.Copy(io.Discard, client); n != int64(len(down)) {
			b.Fatalf("client read %d bytes", n)
		}
		<-done
		for _, c := range []net.Conn{client, edgeIn, edgeOut, backend} {
			_ = c.Close()
		}
	}
}

// TestBalancerSkipsHeld: an upstream whose Held says so is never picked,
// by any policy, and is picked again once released.
func TestBalancerSkipsHeld(t *testing.T) {
	var held bool
	a := &Upstream{Addr: "a", Held: func() bool { return held }}
	b := &Upstream{Addr: "b"}
	for _, p := range Policies {
		bal := &Balancer{Policy: p, Upstreams: []*Upstream{a, b}}
		held = true
		for range 10 {
			if u := bal.Pick(netip.MustParseAddr("192.0.2.7"), nil); u != b {
				t.Fatalf("%s picked %v while a is held", p, u)
			}
		}
		held = false
		if p == First && bal.Pick(netip.Addr{}, nil) != a {
			t.Errorf("first does not pick a once released")
		}
	}
}
