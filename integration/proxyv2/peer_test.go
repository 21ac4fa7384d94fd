package proxyv2_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestPeerPlaceholderAndAccessLog puts HAProxy (send-proxy-v2) in front of
// the listener: {http.request.proxy.peer} and the access log's proxy_peer
// are HAProxy's own socket address (its fc_src as Caddy sees it), while the
// client's address comes from the header.
func TestPeerPlaceholderAndAccessLog(t *testing.T) {
	_, caddyAddr, logFile := startListener(t, defaultPolicy)
	hp := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.StartHAProxy(t, hp, fmt.Sprintf(`frontend fe
  mode http
  bind %s
  default_backend be

backend be
  mode http
  http-reuse never
  server caddy %s send-proxy-v2
`, hp, caddyAddr))
	client := dialFrom(t, "127.0.0.5", hp)
	_, body, err := request(client, nil, "peer.test")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(body)
	if f["remote"] != "127.0.0.5" || f["src"] != client.LocalAddr().String() {
		t.Errorf("the client is not the header's source: %q", body)
	}
	peer := f["peer"]
	if !strings.HasPrefix(peer, "127.0.0.1:") || peer == f["src"] || peer == hp {
		t.Fatalf("peer = %q, want HAProxy's outgoing socket on 127.0.0.1 (body %q)", peer, body)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(logFile)
		for _, line := range bytes.Split(data, []byte("\n")) {
			var entry struct {
				ProxyPeer string `json:"proxy_peer"`
				Request   struct {
					RemoteIP string `json:"remote_ip"`
					Host     string `json:"host"`
				} `json:"request"`
			}
			if json.Unmarshal(line, &entry) != nil || entry.Request.Host != "peer.test" {
				continue
			}
			if entry.ProxyPeer != peer || entry.Request.RemoteIP != "127.0.0.5" {
				t.Fatalf("access log: proxy_peer %q remote_ip %q, want %q and 127.0.0.5:\n%s", entry.ProxyPeer, entry.Request.RemoteIP, peer, line)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access-log line for peer.test:\n%s", data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
