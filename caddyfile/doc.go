// Package caddyfile registers every Rampart Caddyfile directive, global
// option and directive order in one place. The unmarshalers themselves live on
// the module types, as in Caddy.
package caddyfile
