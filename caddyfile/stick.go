package caddyfile

import (
	cf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/stick"
)

// Stick tables: the stick_table global option builds the stick_tables app;
// track, stick_inc, stick_set, stick_ban and tarpit are HTTP handler
// directives. The stick matcher, the listener wrapper, the layer4 handler and
// matcher and `lb_policy stick` are found by module ID and unmarshaled by
// their own modules.
//
// Order: track runs before anything that could read a table (every later
// handler's matchers, header placeholders); then the stick_* actions, then
// tarpit, all before header, so that a tarpitted request still went through
// the actions (a rule such as `stick_inc @hot per_ip gpc0` sees the requests
// that `tarpit @hot` holds), and everything that answers (respond,
// reverse_proxy, file_server) comes later. Each directive is inserted just
// before header, so registering them in this sequence keeps this order.
func init() {
	httpcaddyfile.RegisterGlobalOption("stick_table", stick.ParseGlobalOption)
	for _, dir := range []struct {
		name  string
		parse httpcaddyfile.UnmarshalHandlerFunc
	}{
		{"track", unmarshalStick(func() *stick.Track { return new(stick.Track) })},
		{"stick_inc", unmarshalStick(func() *stick.Inc { return new(stick.Inc) })},
		{"stick_set", unmarshalStick(func() *stick.Set { return new(stick.Set) })},
		{"stick_ban", unmarshalStick(func() *stick.Ban { return new(stick.Ban) })},
		{"tarpit", unmarshalStick(func() *stick.Tarpit { return new(stick.Tarpit) })},
	} {
		httpcaddyfile.RegisterHandlerDirective(dir.name, dir.parse)
		httpcaddyfile.RegisterDirectiveOrder(dir.name, httpcaddyfile.Before, "header")
	}
}

// unmarshalStick builds a handler and lets its UnmarshalCaddyfile parse the
// directive.
func unmarshalStick[T interface {
	caddyhttp.MiddlewareHandler
	cf.Unmarshaler
}](newHandler func() T) httpcaddyfile.UnmarshalHandlerFunc {
	return func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		handler := newHandler()
		return handler, handler.UnmarshalCaddyfile(h.Dispenser)
	}
}
