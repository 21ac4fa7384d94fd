// Package hideorigin keeps an origin's identity from clients: the hide_origin and origin_lock handlers and the origin-audit command.
package hideorigin
