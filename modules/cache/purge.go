// Package cache is the suite's glue around the Caddy project's
// cache-handler (github.com/caddyserver/cache-handler): it serves
// cache-handler's own purge API (the Souin API) on Caddy's admin endpoint
// with the storages the running config's `cache` handlers use.
//
// cache-handler v0.16.0 builds that API when its admin module is
// provisioned, which Caddy v2.11.9 does before it loads the apps: the API
// then holds no storage and no surrogate storage, lists nothing, purges
// nothing and panics on `PURGE .../flush` (cache-handler issues #133 and
// #140). This module registers the same paths, more specific than
// cache-handler's catch-all admin route, and builds the API on first use,
// when the handlers have given the cache app their storages. Flushing
// deletes every stored key one by one: the in-memory default storage's
// DeleteMany removes nothing (Souin v1.7.7).
package cache

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	httpcache "github.com/caddyserver/cache-handler"
	"github.com/caddyserver/caddy/v2"
	"github.com/darkweak/souin/pkg/api"
)

func init() {
	caddy.RegisterModule(new(PurgeAPI))
}

// PurgeAPI (admin.api.rampart_cache) serves cache-handler's API at its
// configured base path (default /souin-api/souin) on the admin endpoint,
// when the `cache` global option enables it (`api { souin }`). It has no
// configuration of its own.
type PurgeAPI struct {
	ctx  caddy.Context
	app  *httpcache.SouinApp
	path string // base path of the Souin API, e.g. /souin-api/souin

	// handlers are Souin's API handlers by path, built on first use (the
	// storages they serve exist once the config runs).
	handlers func() map[string]http.HandlerFunc
}

// CaddyModule returns the Caddy module information.
func (PurgeAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.rampart_cache",
		New: func() caddy.Module { return new(PurgeAPI) },
	}
}

// Provision finds the cache app of this config, if it is configured with
// its Souin API enabled.
func (a *PurgeAPI) Provision(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("cache")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache purge API: %v", err)
	}
	souin, ok := app.(*httpcache.SouinApp)
	if !ok || !souin.API.Souin.Enable {
		return nil
	}
	base, path := souin.API.BasePath, souin.API.Souin.BasePath
	if base == "" {
		base = "/souin-api"
	}
	if path == "" {
		path = "/souin"
	}
	a.ctx, a.app, a.path = ctx, souin, base+path
	a.handlers = sync.OnceValue(func() map[string]http.HandlerFunc {
		config := &httpcache.Configuration{API: souin.API, DefaultCache: souin.DefaultCache}
		if m := api.GenerateHandlerMap(config, souin.Storers, souin.SurrogateStorage); m != nil {
			return *m.Handlers
		}
		return nil
	})
	return nil
}

// Routes returns the API's routes, or none when the API is not enabled.
func (a *PurgeAPI) Routes() []caddy.AdminRoute {
	if a.app == nil {
		return nil
	}
	handler := caddy.AdminHandlerFunc(a.serve)
	return []caddy.AdminRoute{{Pattern: a.path, Handler: handler}, {Pattern: a.path + "/", Handler: handler}}
}

func (a *PurgeAPI) serve(w http.ResponseWriter, r *http.Request) error {
	// Caddy starts the admin endpoint before it provisions the apps, and
	// the handlers hand the cache app its storages while they provision:
	// until this config is the running one they are not there yet (and
	// reading them would race with their writer).
	if caddy.ActiveContext().Context != a.ctx.Context {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("the config is still loading")}
	}
	if r.Method == "PURGE" && strings.TrimSuffix(r.URL.Path, "/") == a.path+"/flush" {
		a.flush()
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	handler := a.handlers()[a.path]
	if handler == nil || a.app.SurrogateStorage == nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("no cache handler in this config has provisioned a storage")}
	}
	handler(w, r)
	return nil
}

// flush deletes every key of every storage, the surrogate keys included
// (they live in the same storers under their own prefix). It deletes key by
// key rather than through the surrogate storage's Destruct: Souin's default
// storage resets its map without the lock its readers take, a data race
// with the stores cache-handler runs in the background after a response.
func (a *PurgeAPI) flush() {
	for _, storer := range a.app.Storers {
		for key := range storer.MapKeys("") {
			storer.Delete(key)
		}
	}
}

// Interface guards
var (
	_ caddy.Provisioner = (*PurgeAPI)(nil)
	_ caddy.AdminRouter = (*PurgeAPI)(nil)
)
