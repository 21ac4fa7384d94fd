package forwardproxy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// run runs a client command with a deadline and returns its stdout.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return string(out), nil
}

// TestCurl drives curl through the proxies: absolute-form (-x), CONNECT
// for https:// URLs, CONNECT for http:// with -p, and an HTTPS proxy with
// its own certificate (--proxy https://, --proxy-cacert); without
// credentials curl gets 407.
func TestCurl(t *testing.T) {
	curl := harness.Peer(t, "curl", "curl")
	e := newEnv(t)
	e.start(baseConfig)
	plain := "http://" + e.plain
	creds := user + ":" + password
	secure := "https://localhost:" + portOf(e.secure)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"absolute-form", []string{"-x", plain, "--proxy-user", creds, fmt.Sprintf("http://allowed.test:%d/curl-abs", e.httpOrig.port())}, "uri /curl-abs"},
		{"CONNECT for https", []string{"-x", plain, "--proxy-user", creds, "--cacert", e.originCA.CertFile, fmt.Sprintf("https://allowed.test:%d/curl-tls", e.tlsOrig.port())}, "uri /curl-tls"},
		{"CONNECT with -p", []string{"-p", "-x", plain, "--proxy-user", creds, fmt.Sprintf("http://allowed.test:%d/curl-p", e.httpOrig.port())}, "uri /curl-p"},
		{"HTTPS proxy", []string{"--proxy", secure, "--proxy-cacert", e.proxyCA.CertFile, "--proxy-user", creds, "--cacert", e.originCA.CertFile, fmt.Sprintf("https://allowed.test:%d/curl-https-proxy", e.tlsOrig.port())}, "uri /curl-https-proxy"},
		{"HTTPS proxy absolute-form", []string{"--proxy", secure, "--proxy-cacert", e.proxyCA.CertFile, "--proxy-user", creds, fmt.Sprintf("http://allowed.test:%d/curl-https-abs", e.httpOrig.port())}, "uri /curl-https-abs"},
		{"no credentials", []string{"-o", "/dev/null", "-w", "%{http_code}", "-x", plain, fmt.Sprintf("http://allowed.test:%d/", e.httpOrig.port())}, "407"},
		{"no credentials, CONNECT", []string{"-o", "/dev/null", "-w", "%{http_connect}", "-x", plain, "--cacert", e.originCA.CertFile, fmt.Sprintf("https://allowed.test:%d/", e.tlsOrig.port())}, "407"},
		{"loopback refused", []string{"-o", "/dev/null", "-w", "%{http_connect}", "-p", "-x", plain, "--proxy-user", creds, fmt.Sprintf("http://127.0.0.1:%d/", e.echo.port())}, "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, curl, append([]string{"-sS", "--max-time", "20", "--noproxy", ""}, tc.args...)...)
			if err != nil && !strings.Contains(tc.want, "40") {
				t.Fatal(err)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("curl printed %q, want %q (%v)", out, tc.want, err)
			}
		})
	}
}

// TestPythonUrllib uses Python's urllib with a ProxyHandler (credentials in
// the proxy URL) for an http:// URL (absolute-form) and an https:// one
// (CONNECT).
func TestPythonUrllib(t *testing.T) {
	python := harness.Peer(t, "python3", "python3")
	e := newEnv(t)
	e.start(baseConfig)
	script := `
import ssl, sys, urllib.request
proxy = "http://alice:wonderland@" + sys.argv[1]
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
    urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=sys.argv[2])))
for url in sys.argv[3:]:
    print(opener.open(url, timeout=20).read().decode())
`
	out, err := run(t, python, "-c", script, e.plain, e.originCA.CertFile,
		fmt.Sprintf("http://allowed.test:%d/py-abs", e.httpOrig.port()),
		fmt.Sprintf("https://allowed.test:%d/py-tls", e.tlsOrig.port()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"uri /py-abs", "uri /py-tls", "User-Agent: Python-urllib"} {
		if !strings.Contains(out, want) {
			t.Errorf("python printed %q, want %q", out, want)
		}
	}
	if strings.Contains(out, "Proxy-Authorization") {
		t.Errorf("the proxy credentials reached the origin:\n%s", out)
	}
}

// TestChromium loads an HTTPS page from a loopback origin in headless
// Chromium through the HTTPS proxy (--proxy-server=https://...), which
// Chromium talks HTTP/2 to: the page arrives through an HTTP/2 CONNECT.
func TestChromium(t *testing.T) {
	e := newEnv(t)
	config := strings.Replace(baseConfig, ":${SECURE} {\n", ":${SECURE} {\n\tlog {\n\t\toutput file ${ACCESS}\n\t\tformat json\n\t}\n", 1)
	e.start(config)
	opts := harness.Chromium(t,
		chromedp.Flag("disable-quic", true),
		chromedp.ProxyServer("https://localhost:"+portOf(e.secure)),
		// the proxy and the origin have self-signed certificates
		chromedp.Flag("ignore-certificate-errors", true),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	url := fmt.Sprintf("https://allowed.test:%d/chromium", e.tlsOrig.port())
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		data, _ := os.ReadFile(e.access)
		t.Fatalf("loading %s through the proxy: %v\n%s", url, err, data)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
	if err != nil {
		t.Fatal(err)
	}
	if title != "origin page" || !strings.Contains(text, "uri /chromium") {
		t.Fatalf("title %q, body %q", title, text)
	}
	cancel() // Chromium goes away: the tunnel ends and is logged
	var data []byte
	found := false
	for deadline := time.Now().Add(10 * time.Second); !found && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		data, _ = os.ReadFile(e.access)
		for line := range strings.SplitSeq(string(data), "\n") {
			if strings.Contains(line, `"method":"CONNECT"`) && strings.Contains(line, fmt.Sprintf(`"uri":"allowed.test:%d"`, e.tlsOrig.port())) {
				found = true
				if !strings.Contains(line, `"proto":"HTTP/2.0"`) || !strings.Contains(line, `"decision":"allowed"`) {
					t.Errorf("Chromium's CONNECT was not an allowed HTTP/2 tunnel: %s", line)
				}
			}
		}
	}
	if !found {
		t.Errorf("no CONNECT in the proxy's access log:\n%s", data)
	}
}
