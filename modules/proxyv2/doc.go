// Package proxyv2 receives and sends the PROXY protocol in Caddy: a listener wrapper, a layer4 handler, a reverse_proxy transport and placeholders.
package proxyv2
