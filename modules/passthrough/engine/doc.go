// Package engine holds the parts of SNI passthrough that need no Caddy: the
// name patterns a route is written with (exact, wildcard, regular
// expression), a TLS ClientHello reader that extracts the server name and
// the ALPN list, the relay that copies bytes between two TCP connections
// zero-copy (splice) with half-close and an idle timeout, and upstream
// selection with health state.
package engine
