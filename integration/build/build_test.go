// Package build_test builds the real Caddy binary the way the README tells
// users to (xcaddy with this module only, from xcaddy.json through xcaddy's
// Go package) and checks what a user of that binary sees: every module is
// there, every example validates, and the examples that run on a laptop
// start and answer.
package build_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

const modulePath = "github.com/rampart-edge/caddy-rampart"

// rampartModules lists the IDs of every Caddy module this repository
// registers, found by the Go package of each registered module.
func rampartModules() []string {
	var ids []string
	for _, id := range caddy.Modules() {
		info, err := caddy.GetModule(id)
		if err != nil {
			continue
		}
		typ := reflect.TypeOf(info.New())
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if strings.HasPrefix(typ.PkgPath(), modulePath+"/") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// TestRecipeIsTheUsersBuild checks that xcaddy.json is the build the README
// tells users to make: this module and nothing else, replaced by the
// checkout, and that the README's command says exactly that.
func TestRecipeIsTheUsersBuild(t *testing.T) {
	recipe := harness.LoadRecipe(t)
	if len(recipe.Plugins) != 1 || recipe.Plugins[0].PackagePath != modulePath {
		t.Errorf("xcaddy.json plugins = %+v, want only %s: the suite must bring every module it needs itself", recipe.Plugins, modulePath)
	}
	if len(recipe.Replacements) != 1 || recipe.Replacements[0].Old.String() != modulePath {
		t.Errorf("xcaddy.json replacements = %+v, want only %s => .", recipe.Replacements, modulePath)
	}
	readme, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "## Building your own binary")
	if start < 0 {
		t.Fatal(`README.md has no "## Building your own binary" section`)
	}
	section = section[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	withs := regexp.MustCompile(`--with (\S+)`).FindAllStringSubmatch(section, -1)
	if len(withs) == 0 {
		t.Fatal("README's build section gives no xcaddy --with")
	}
	for _, with := range withs {
		if !strings.HasPrefix(with[1], modulePath) {
			t.Errorf("README's build section adds %s: users must need only %s", with[1], modulePath)
		}
	}
	want := fmt.Sprintf("go tool xcaddy build %s \\\n    --with %s@%s=.", recipe.CaddyVersion, modulePath, recipe.Plugins[0].Version)
	if !strings.Contains(section, want) {
		t.Errorf("README's build section does not give xcaddy.json's recipe as:\n%s", want)
	}
}

func TestBinaryFromXcaddyJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Caddy binary; skipped with -short")
	}
	bin := harness.BuildCaddy(t)
	setUserEnv(t, t.TempDir())
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	recipe := harness.LoadRecipe(t)
	if version := run("version"); !strings.HasPrefix(version, recipe.CaddyVersion) {
		t.Errorf("caddy version = %q, want %s", version, recipe.CaddyVersion)
	}

	listed := map[string]bool{}
	for _, line := range strings.Split(run("list-modules"), "\n") {
		listed[strings.TrimSpace(line)] = true
	}
	want := rampartModules()
	if len(want) < 5 {
		t.Fatalf("found only %d Rampart modules in this test binary: %v", len(want), want)
	}
	// What the suite's generated configs and the README's examples use
	// besides its own modules: caddy-l4's app, matchers and handlers, and
	// cache-handler's app and handler.
	want = append(want, "layer4", "layer4.matchers.tls", "layer4.matchers.proxy_protocol",
		"layer4.handlers.proxy", "layer4.handlers.subroute", "tls.handshake_match.sni",
		"cache", "http.handlers.cache")
	for _, id := range want {
		if !listed[id] {
			t.Errorf("module %s is missing from the built binary's list-modules", id)
		}
	}

	examples, err := filepath.Glob(filepath.Join(harness.RepoRoot(t), "examples", "*", "Caddyfile"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples/*/Caddyfile (%v)", err)
	}
	for _, file := range examples {
		name := filepath.Base(filepath.Dir(file))
		t.Run("validate/"+name, func(t *testing.T) {
			if out, err := exec.Command(bin, "validate", "--config", file).CombinedOutput(); err != nil {
				t.Errorf("caddy validate --config %s: %v\n%s", file, err, out)
			}
		})
	}

	// The examples that run on a laptop, started as they are but on free
	// ports, each with a request that shows it works.
	laptop := map[string]func(t *testing.T, port map[int]int){
		"quickstart": func(t *testing.T, port map[int]int) {
			body := get(t, fmt.Sprintf("http://localhost:%d/", port[8080]), "")
			if !strings.Contains(body, "Demo origin") || strings.Contains(body, "10.0.0.10") {
				t.Errorf("quickstart edge: %q, want the demo origin with its address scrubbed", body)
			}
			// layer4 at run time: pass.localhost is relayed still encrypted.
			body = get(t, fmt.Sprintf("https://127.0.0.1:%d/", port[8443]), "pass.localhost")
			if !strings.HasPrefix(body, "backend: TLS terminated here") {
				t.Errorf("quickstart passthrough: %q", body)
			}
		},
		"hideorigin": func(t *testing.T, port map[int]int) {
			body := get(t, fmt.Sprintf("https://127.0.0.1:%d/", port[9443]), "localhost")
			if !strings.Contains(body, "/account") || strings.Contains(body, "app.internal") {
				t.Errorf("hideorigin edge: %q, want the link with the origin's name scrubbed", body)
			}
		},
		"stick": func(t *testing.T, port map[int]int) {
			body := get(t, fmt.Sprintf("http://localhost:%d/", port[8080]), "")
			if body != "origin one\n" && body != "origin two\n" {
				t.Errorf("stick edge: %q, want one of its origins", body)
			}
		},
	}
	for name, check := range laptop {
		t.Run("run/"+name, func(t *testing.T) {
			file := filepath.Join(harness.RepoRoot(t), "examples", name, "Caddyfile")
			port := startExample(t, bin, file)
			check(t, port)
		})
	}
	if len(examples) < len(laptop)+1 {
		t.Errorf("expected the laptop examples plus passthrough, found %v", examples)
	}
}

// setUserEnv gives the test (and the commands it runs) the environment of
// a user's shell in a fresh home: Caddy's storage and autosave go under
// home, and the key the hideorigin example reads is set.
func setUserEnv(t *testing.T, home string) {
	t.Setenv("HOME", home)
	t.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("RAMPART_EDGE_KEY", "YnVpbGQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZy1vaw==")
}

// portPattern finds the ports a Caddyfile names: after a colon or after
// http_port / https_port.
var portPattern = regexp.MustCompile(`(:|_port )(\d{4,5})\b`)

// startExample runs `caddy run` on an example with every port it names
// moved to a free one, waits until each listens, and stops it through the
// admin API (`caddy stop`) when the test ends. It returns the map from the
// example's ports to the ones used.
func startExample(t *testing.T, bin, file string) map[int]int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Comments go: they name ports the example does not listen on.
	var lines []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			lines = append(lines, line)
		}
	}
	port := map[int]int{}
	moved := portPattern.ReplaceAllStringFunc(strings.Join(lines, "\n"), func(m string) string {
		sub := portPattern.FindStringSubmatch(m)
		old, _ := strconv.Atoi(sub[2])
		if port[old] == 0 {
			port[old] = harness.FreePort(t)
		}
		return sub[1] + strconv.Itoa(port[old])
	})
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	setUserEnv(t, dir)
	t.Setenv("CADDY_ADMIN", admin)
	harness.Start(t, admin, bin, "run", "--config", config)
	t.Cleanup(func() {
		if msg, err := exec.Command(bin, "stop", "--address", admin).CombinedOutput(); err != nil {
			t.Errorf("caddy stop: %v\n%s", err, msg)
		}
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			conn, err := net.DialTimeout("tcp", admin, 200*time.Millisecond)
			if err != nil {
				return
			}
			conn.Close()
			if time.Now().After(deadline) {
				t.Errorf("caddy run still listens on %s 15s after caddy stop", admin)
				return
			}
		}
	})
	for _, p := range port {
		harness.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", p), 30*time.Second)
	}
	return port
}

// get fetches url over loopback (like curl -k, sending serverName as SNI
// when given) and returns the body, retrying for up to 15 s while Caddy's
// internal CA issues the site's certificate.
func get(t *testing.T, url, serverName string) string {
	t.Helper()
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: serverName},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, p, _ := net.SplitHostPort(addr)
				return dialer.DialContext(ctx, "tcp", "127.0.0.1:"+p)
			},
		},
	}
	defer client.CloseIdleConnections()
	var lastErr error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if serverName != "" {
			req.Host = serverName
		}
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			return string(body)
		}
		lastErr = fmt.Errorf("%d %q (%v)", resp.StatusCode, body, err)
	}
	t.Fatalf("GET %s (SNI %q): %v", url, serverName, lastErr)
	return ""
}
