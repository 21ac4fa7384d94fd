package stats

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

// stickPolicyID is Rampart's `lb_policy stick`, reached by module name (the
// glue packages do not import each other).
const stickPolicyID = "http.reverse_proxy.selection_policies.stick"

// boundBy returns how a selection policy binds requests to upstreams, for a
// drain with keep_sticky, or nil when it does not: Caddy's `cookie` (the
// request's cookie names the upstream) and Rampart's `stick` (the client's
// stick-table entry stores the upstream's server_id). Hash policies
// (ip_hash, uri_hash, header, query, client_ip_hash) balance rather than
// persist, so a drain moves their clients, as HAProxy's drain (weight 0)
// takes a server out of hashing.
func boundBy(policy reverseproxy.Selector, stick caddy.AdminHandler) func(*http.Request, *reverseproxy.Upstream) bool {
	if c, ok := policy.(*reverseproxy.CookieHashSelection); ok {
		name, secret := c.Name, c.Secret
		return func(r *http.Request, u *reverseproxy.Upstream) bool {
			cookie, err := r.Cookie(name)
			if err != nil {
				return false
			}
			mac := hmac.New(sha256.New, []byte(secret)) // as Caddy's cookie policy hashes the dial address
			mac.Write([]byte(u.Dial))
			return hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(cookie.Value))
		}
	}
	if caddy.GetModuleID(policy) != stickPolicyID {
		return nil
	}
	var cfg struct {
		Table string `json:"table"`
	}
	if raw, err := json.Marshal(policy); err != nil || json.Unmarshal(raw, &cfg) != nil || cfg.Table == "" {
		return nil
	}
	return func(r *http.Request, u *reverseproxy.Upstream) bool {
		id, ok := stickServerID(r, cfg.Table, stick)
		return ok && id == table.UpstreamServerID(u.Dial)
	}
}

// stickServerID is the server_id of the request's entry in a table: the
// entry `track` used for the table in this request (its placeholder), else
// the client IP's entry, as the stick policy finds it.
func stickServerID(r *http.Request, table string, stick caddy.AdminHandler) (uint64, bool) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if v, ok := repl.Get("http.stick." + table + ".server_id"); ok {
			id, ok := v.(uint64)
			return id, ok
		}
	}
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if stick == nil || ip == "" {
		return 0, false
	}
	rec := httptest.NewRecorder()
	target := "/stick-tables/" + url.PathEscape(table) + "/" + url.PathEscape(ip)
	if err := stick.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil)); err != nil || rec.Code != http.StatusOK {
		return 0, false
	}
	var entry struct {
		Values map[string]uint64 `json:"values"`
	}
	if json.Unmarshal(rec.Body.Bytes(), &entry) != nil {
		return 0, false
	}
	id, ok := entry.Values["server_id"]
	return id, ok
}
