package caddyfile

// The `cache` directive and global option are the Caddy project's
// cache-handler (github.com/caddyserver/cache-handler, pinned in go.mod);
// this import puts them in every build that has Rampart's Caddyfile
// support. cache-handler registers its own directive order (`cache` right
// before `rewrite`; Caddy panics on a second registration, so it cannot be
// registered here again), and with Rampart's orders that gives, for a site
// that lists them in any order:
//
//	track, stick_inc, stick_set, stick_ban, tarpit   (before header)
//	cache                                            (before rewrite)
//	encode, hide_origin                              (hide_origin right after encode)
//	handle, route, respond, reverse_proxy, ...
//
// which is what origin hiding and stick tables need from a cache:
//   - track runs first, so requests answered from the cache are counted,
//     and tarpit refuses them before the cache can answer;
//   - the cache wraps hide_origin, so it stores (and serves) the scrubbed
//     response, and every request it sends on to the origin, revalidations
//     included, goes through hide_origin and is signed for origin_lock.
//
// `respond`, `error` and `abort` come after `cache` in Caddy's order: a
// refusal written with them does not hold for a cached page unless it is
// in a `route` block before `cache` (see the quickstart). The golden file
// testdata/cache_order.caddytest pins this order.
import _ "github.com/caddyserver/cache-handler"
