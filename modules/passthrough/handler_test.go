package passthrough

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// loadHandler loads a passthrough handler from its JSON as Caddy does
// (Provision, then Validate), in a context that ends with the test.
func loadHandler(t *testing.T, config string) (*Handler, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	mod, err := ctx.LoadModuleByID("layer4.handlers.passthrough", json.RawMessage(config))
	if err != nil {
		return nil, err
	}
	return mod.(*Handler), nil
}

// TestValidateJSON: the checks a Caddyfile gets also refuse JSON configs,
// with the same message.
func TestValidateJSON(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{`{"upstreams":["10.0.0.5:443"],"health_checks":{"interval":1000000000,"port":70000}}`, `health_port 70000 out of range`},
		{`{"upstreams":["10.0.0.5:443"],"health_checks":{"interval":1000000000,"port":-1}}`, `health_port -1 out of range`},
		{`{"upstreams":["10.0.0.5:443"],"health_checks":{"interval":1000000000,"passes":-2}}`, `health_passes -2`},
		{`{"upstreams":["10.0.0.5:443"],"health_checks":{"interval":1000000000,"fails":-2}}`, `health_fails -2`},
		{`{"upstreams":["10.0.0.5:443"],"health_checks":{"interval":-1}}`, `health_interval -1ns`},
		{`{"upstreams":["10.0.0.5:443"],"idle_timeout":-1}`, `idle_timeout -1ns`},
		{`{"upstreams":["10.0.0.5"]}`, `upstream "10.0.0.5"`},
		{`{"upstreams":["10.0.0.5:443"],"lb_policy":"weighted"}`, `unknown lb_policy "weighted"`},
		{`{"upstreams":["10.0.0.5:443"],"proxy_protocol":"v1"}`, `proxy_protocol "v1"`},
		{`{"upstreams":["10.0.0.5:443"],"proxy_protocol":"v2","proxy_protocol_tlvs":["ssl"]}`, `unknown TLV "ssl"`},
		{`{}`, `no upstreams`},
	} {
		_, err := loadHandler(t, tc.config)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.config, err, tc.want)
		}
	}
}

// panicWriter is a client connection whose writes panic, as a buggy
// wrapper would.
type panicWriter struct{ net.Conn }

func (panicWriter) Write([]byte) (int, error) { panic("write to the client") }

// TestReleaseOnEveryExit: whatever ends a relayed connection (a dial that
// fails, a client that leaves, an upstream that closes, the idle timeout,
// a panic), the upstream's connection count and the route's active gauge
// come back to zero.
func TestReleaseOnEveryExit(t *testing.T) {
	closed := func() string { // an address nothing listens on
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		return ln.Addr().String()
	}
	// upstream behaviours
	closing := serveTCP(t, func(c net.Conn) { c.Close() })
	talking := serveTCP(t, func(c net.Conn) { _, _ = c.Write([]byte("hello")); _, _ = io.Copy(io.Discard, c) })
	silent := serveTCP(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })

	for _, tc := range []struct {
		name      string
		upstreams []string
		client    func(c net.Conn) // what the client does
		wrap      func(c net.Conn) net.Conn
	}{
		{name: "every dial fails", upstreams: []string{closed(), closed()}},
		{name: "first dial fails", upstreams: []string{closed(), closing}},
		{name: "client gone", upstreams: []string{silent}, client: func(c net.Conn) { c.Close() }},
		{name: "upstream closes", upstreams: []string{closing}},
		{name: "idle timeout", upstreams: []string{silent}},
		{name: "panic", upstreams: []string{talking}, wrap: func(c net.Conn) net.Conn { return panicWriter{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ups, _ := json.Marshal(tc.upstreams)
			route := "release-" + strings.ReplaceAll(tc.name, " ", "-")
			h, err := loadHandler(t, fmt.Sprintf(`{"route":%q,"upstreams":%s,"lb_policy":"first","idle_timeout":200000000}`, route, ups))
			if err != nil {
				t.Fatal(err)
			}
			client, server := tcpPair(t)
			if tc.client != nil {
				tc.client(client)
			}
			var conn net.Conn = server
			if tc.wrap != nil {
				conn = tc.wrap(server)
			}
			cx := layer4.WrapConnection(conn, nil, zap.NewNop())
			done := make(chan any, 1)
			go func() {
				defer func() { done <- recover() }()
				_ = h.Handle(cx, nil)
			}()
			select {
			case p := <-done:
				if tc.wrap != nil && p == nil {
					t.Fatal("the write did not panic")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Handle did not return")
			}
			for _, u := range h.balancer.Upstreams {
				if n := u.Active(); n != 0 {
					t.Errorf("upstream %s: %d connections still counted", u.Addr, n)
				}
			}
			if v := testutil.ToFloat64(metrics.active.WithLabelValues(route)); v != 0 {
				t.Errorf("connections_active{route=%q} = %v after the connection ended", route, v)
			}
		})
	}
}

// serveTCP serves each connection with serve until the test ends.
func serveTCP(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String()
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal(errors.New("accept failed"))
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
