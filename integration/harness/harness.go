// Package harness starts the real parts that Rampart's integration tests talk
// to: Caddy in-process, the real Caddy binary built from xcaddy.json, and
// peers from Debian (haproxy, nginx). Every peer listens on a
// free loopback port and is stopped when the test ends.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequirePeersEnv is the environment variable that turns a missing peer from a
// skip into a failure; .ci/run sets it.
const RequirePeersEnv = "RAMPART_REQUIRE_PEERS"

// Peer returns the path of a peer binary, or skips the test (fails it when
// RAMPART_REQUIRE_PEERS=1) naming the Debian package that provides it.
func Peer(t testing.TB, binary, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(binary)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		candidate := filepath.Join(dir, binary)
		if _, statErr := os.Stat(candidate); statErr == nil {
			return candidate
		}
	}
	missingPeer(t, fmt.Sprintf("peer %q not found: apt-get install %s", binary, debianPackage))
	return ""
}

// missingPeer skips the test with msg, or fails it when
// RAMPART_REQUIRE_PEERS=1.
func missingPeer(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(RequirePeersEnv) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// FreePort returns a TCP port that was free on every address a moment ago.
// It is picked below Linux's ephemeral range (32768-60999), where the kernel
// never places the local end of an outgoing connection: a port from ":0"
// could be taken by any client socket of a test running in parallel before
// the test binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	const low, high = 20000, 32768
	for range 200 {
		port := low + rand.IntN(high-low)
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatalf("no free port in %d-%d after 200 tries", low, high-1)
	return 0
}

// WaitListening waits until addr accepts TCP connections or fails the test.
func WaitListening(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not listening after %s: %v", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process is a peer started by Start; its combined output is kept for the
// test log.
type Process struct {
	Cmd    *exec.Cmd
	output *lockedBuffer
}

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.output.String() }

// Start runs a peer until the test ends, waits for readyAddr to listen (when
// not empty) and logs the peer's output if the test fails.
func Start(t testing.TB, readyAddr string, name string, args ...string) *Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), out.String())
		}
	})
	if readyAddr != "" {
		deadline := time.Now().Add(15 * time.Second)
		for {
			conn, err := net.DialTimeout("tcp", readyAddr, 200*time.Millisecond)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-done:
				t.Fatalf("%s exited before listening on %s:\n%s", name, readyAddr, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is not listening on %s:\n%s", name, readyAddr, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return &Process{Cmd: cmd, output: out}
}

// StartHAProxy runs haproxy in the foreground with the given configuration
// (global and defaults sections are added) and waits for readyAddr.
func StartHAProxy(t testing.TB, readyAddr, config string) *Process {
	t.Helper()
	bin := Peer(t, "haproxy", "haproxy")
	dir := t.TempDir()
	full := "global\n  log stderr format raw local0 info\n\ndefaults\n  log global\n  timeout connect 5s\n" +
		"  timeout client 30s\n  timeout server 30s\n\n" + config
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "-c", "-f", file)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy rejects the test config: %v\n%s\n%s", err, out, full)
	}
	return Start(t, readyAddr, bin, "-db", "-f", file)
}

// StartNginx runs nginx in the foreground with the given http and stream
// blocks (either may be empty) and waits for readyAddr. The stream module is
// loaded from Debian's libnginx-mod-stream when a stream block is given.
func StartNginx(t testing.TB, readyAddr, httpBlock, streamBlock string) *Process {
	t.Helper()
	bin := Peer(t, "nginx", "nginx-light")
	dir := t.TempDir()
	var conf strings.Builder
	if streamBlock != "" {
		module := "/usr/lib/nginx/modules/ngx_stream_module.so"
		if _, err := os.Stat(module); err != nil {
			missingPeer(t, "nginx stream module not found: apt-get install libnginx-mod-stream")
		}
		fmt.Fprintf(&conf, "load_module %s;\n", module)
	}
	fmt.Fprintf(&conf, "daemon off;\nmaster_process off;\npid %s/nginx.pid;\nerror_log stderr info;\n", dir)
	conf.WriteString("events { worker_connections 256; }\n")
	if httpBlock != "" {
		fmt.Fprintf(&conf, "http {\n access_log off;\n client_body_temp_path %[1]s/body;\n proxy_temp_path %[1]s/proxy;\n"+
			" fastcgi_temp_path %[1]s/fcgi;\n uwsgi_temp_path %[1]s/uwsgi;\n scgi_temp_path %[1]s/scgi;\n%[2]s\n}\n", dir, httpBlock)
	}
	if streamBlock != "" {
		fmt.Fprintf(&conf, "stream {\n%s\n}\n", streamBlock)
	}
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return Start(t, readyAddr, bin, "-p", dir, "-c", file, "-e", "stderr")
}

// RepoRoot returns the root of this checkout (the folder with go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the harness source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
