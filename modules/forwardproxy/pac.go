package forwardproxy

import (
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy/egress"
)

// servePAC answers the PAC path with a proxy auto-config file that sends
// every request through this proxy, as the client reached it (the request's
// host and port; HTTPS when the request came over TLS).
func (fp *ForwardProxy) servePAC(w http.ResponseWriter, r *http.Request) error {
	kind, port := "PROXY", "80"
	if r.TLS != nil {
		kind, port = "HTTPS", "443"
	}
	host := r.Host
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		host, port = h, p
	}
	// the host goes into JavaScript: only a valid host name or IP
	h, err := egress.ParseHost(host)
	if err != nil {
		http.Error(w, "forward_proxy: bad Host for the PAC file", http.StatusBadRequest)
		return nil
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		http.Error(w, "forward_proxy: bad Host for the PAC file", http.StatusBadRequest)
		return nil
	}
	proxy := net.JoinHostPort(h.String(), port)
	w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = fmt.Fprintf(w, "function FindProxyForURL(url, host) {\n\treturn %q;\n}\n", kind+" "+proxy)
	return nil
}
