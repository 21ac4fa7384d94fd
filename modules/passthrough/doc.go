// Package passthrough routes TLS connections by SNI to backends untouched, beside sites that Caddy terminates, on one listener.
package passthrough
