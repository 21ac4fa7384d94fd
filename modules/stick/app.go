package stick

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/metrics"
	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the `stick_tables` app: the named stick tables that the track
// handler, the stick matcher, the listener wrapper, the layer4 handler and
// matcher, the stick lb policy and the admin API share. A table keeps its
// entries across config reloads as long as its name and schema (key type,
// key length, prefixes and stored data types with their periods) stay the
// same; size and expire may change in place.
type App struct {
	// Tables by name.
	Tables map[string]*TableConfig `json:"tables,omitempty"`

	tables    map[string]*liveTable
	keys      []string
	shared    []*shared
	syncing   *sync.WaitGroup
	endSync   context.CancelFunc
	logger    *zap.Logger
	stop      chan struct{}
	done      chan struct{}
	stopClock func()
}

// TableConfig is one table.
type TableConfig struct {
	// Key type: ip (IPv4 and IPv6), ipv6, integer, string or binary.
	Type string `json:"type"`
	// Length of string and binary keys in bytes (default 32); longer keys
	// are truncated, shorter binary keys zero-padded.
	Len int `json:"len,omitempty"`
	// Maximum number of entries (at most 2^31). When the table is full, an
	// entry that no live connection or request holds is evicted, chosen by
	// CLOCK (entries hit since the eviction hand last passed are spared).
	Size int `json:"size"`
	// Entries expire after this long without use (0: never; they are then
	// only evicted).
	Expire caddy.Duration `json:"expire,omitempty"`
	// Stored data types, as HAProxy's store keywords: conn_cnt conn_cur
	// conn_rate(<period>) req_cur http_req_cnt http_req_rate(<period>)
	// http_err_cnt http_err_rate(<period>) http_fail_cnt
	// http_fail_rate(<period>) bytes_in_cnt bytes_in_rate(<period>)
	// bytes_out_cnt bytes_out_rate(<period>) gpc(<n>) gpc_rate(<n>,<period>)
	// gpt(<n>) server_id ban, and the legacy gpc0 gpc1 gpt0
	// gpc0_rate(<period>) gpc1_rate(<period>).
	Store []string `json:"store,omitempty"`
	// Group IPv4 keys by this prefix length (1..32; 0 or 32: per address).
	IPv4Prefix int `json:"ipv4_prefix,omitempty"`
	// Group IPv6 keys by this prefix length (1..128; 0 or 128: per address).
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
	// Shared shares the table with the other edges of the stick_cluster:
	// "async" sums the counters of every edge through Redis every sync
	// interval, with no Redis operation on the request path; "strict"
	// applies every request's increments in Redis (one atomic script per
	// key, the requests waiting at once pipelined in one round trip), so
	// limits are exact cluster-wide. Empty: the table is this edge's alone.
	Shared string `json:"shared,omitempty"`
}

// Validate checks the table and builds its schema. It holds every rule of
// a table definition, for JSON configs and the Caddyfile alike (the
// Caddyfile parser calls it to point at the user's line); errors name the
// table and the offending value.
func (tc *TableConfig) Validate(name string) (*table.Schema, error) {
	fail := func(format string, args ...any) (*table.Schema, error) {
		return nil, fmt.Errorf("stick_table %s: "+format, append([]any{name}, args...)...)
	}
	if name == "" {
		return nil, fmt.Errorf("stick_table: empty table name")
	}
	if tc.Type == "" {
		return fail("missing type")
	}
	kt, err := table.ParseKeyType(tc.Type)
	if err != nil {
		return fail("%v", err)
	}
	if tc.Len != 0 && kt != table.KeyString && kt != table.KeyBinary {
		return fail("len applies to string and binary keys, not %s", kt)
	}
	if tc.Len < 0 {
		return fail("len %d is not a positive integer", tc.Len)
	}
	if tc.Size < 1 {
		return fail("missing size (want a positive count of entries, e.g. size 100k)")
	}
	if tc.Size > table.MaxSize {
		return fail("size %d is more than the largest table, %d entries", tc.Size, table.MaxSize)
	}
	switch tc.Shared {
	case "", sharedAsync, sharedStrict:
	default:
		return fail("shared %q: want async or strict", tc.Shared)
	}
	if tc.Expire < 0 {
		return fail("expire %s must not be negative", time.Duration(tc.Expire))
	}
	s := &table.Schema{Type: kt, KeyLen: tc.Len, IPv4Prefix: tc.IPv4Prefix, IPv6Prefix: tc.IPv6Prefix, Replicated: tc.Shared != ""}
	for _, spec := range tc.Store {
		if s.Fields, err = table.ParseStore(s.Fields, spec, caddy.ParseDuration); err != nil {
			return fail("%v", err)
		}
	}
	if err := s.Init(); err != nil {
		return fail("%v", err)
	}
	return s, nil
}

// liveTable is a table in the usage pool, shared by every config that uses
// the same name and schema.
type liveTable struct {
	name   string
	tbl    *table.Table
	schema *table.Schema
	// sharing is the sync state of the current config when shared.
	sharing atomic.Pointer[shared]
}

// Destruct implements caddy.Destructor: the last config using the table is
// gone.
func (*liveTable) Destruct() error { return nil }

// tablePool holds the tables across reloads, keyed by name and schema.
var tablePool = caddy.NewUsagePool()

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "stick_tables",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision creates the tables or takes them over from the previous config.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.tables = make(map[string]*liveTable, len(a.Tables))
	if err := metrics.Register(ctx, rejections, tableCollector{app: a}, syncSeconds, syncErrors, strictErrors, clusterCollector{app: a}); err != nil {
		return fmt.Errorf("stick tables: registering metrics: %v", err)
	}
	names := make([]string, 0, len(a.Tables))
	for name := range a.Tables {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tc := a.Tables[name]
		if tc == nil {
			return fmt.Errorf("stick_table %s: empty definition", name)
		}
		schema, err := tc.Validate(name)
		if err != nil {
			return err
		}
		poolKey := name + "\x00" + schema.String()
		if schema.Replicated {
			poolKey += " shared"
		}
		tablePool.Range(func(key, val any) bool {
			if k := key.(string); k != poolKey && strings.HasPrefix(k, name+"\x00") {
				a.logger.Warn("stick table schema changed: starting a fresh table, previous entries are dropped",
					zap.String("table", name), zap.String("previous", val.(*liveTable).schema.String()), zap.String("new", schema.String()))
			}
			return true
		})
		val, loaded, err := tablePool.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
			t, err := table.New(schema, table.Options{Size: tc.Size, Expire: time.Duration(tc.Expire)})
			if err != nil {
				return nil, fmt.Errorf("stick_table %s: %v", name, err)
			}
			return &liveTable{name: name, tbl: t, schema: schema}, nil
		})
		if err != nil {
			return err
		}
		a.keys = append(a.keys, poolKey)
		lt := val.(*liveTable)
		if loaded {
			lt.tbl.SetExpire(time.Duration(tc.Expire))
			if lt.tbl.Size() != tc.Size {
				lt.tbl.Resize(tc.Size)
			}
		}
		a.tables[name] = lt
	}
	return a.provisionShared(ctx)
}

// Start starts the table clock and the expiry sweeper.
func (a *App) Start() error {
	a.stopClock = table.StartClock()
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go a.sweep()
	var ctx context.Context
	ctx, a.endSync = context.WithCancel(context.Background())
	a.syncing = new(sync.WaitGroup)
	a.runShared(ctx)
	return nil
}

// sweep removes expired entries once a second, so that memory follows the
// live entries even when nobody looks them up again.
func (a *App) sweep() {
	defer close(a.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-tick.C:
			for _, lt := range a.tables {
				lt.tbl.Sweep()
			}
		}
	}
}

// Stop stops the sweeper and ends the app's use of the table clock.
func (a *App) Stop() error {
	if a.endSync != nil {
		a.endSync()
		a.syncing.Wait()
		a.endSync = nil
	}
	if a.stop != nil {
		close(a.stop)
		<-a.done
		a.stop = nil
	}
	if a.stopClock != nil {
		a.stopClock()
		a.stopClock = nil
	}
	return nil
}

// Cleanup releases the app's hold on its tables; a table whose name or
// schema is gone from the new config is dropped.
func (a *App) Cleanup() error {
	for _, k := range a.keys {
		_, _ = tablePool.Delete(k)
	}
	return nil
}

// Table returns the named table.
func (a *App) Table(name string) (*table.Table, error) {
	lt, ok := a.tables[name]
	if !ok {
		known := make([]string, 0, len(a.tables))
		for n := range a.tables {
			known = append(known, n)
		}
		sort.Strings(known)
		if len(known) == 0 {
			return nil, fmt.Errorf("no stick table named %q: no stick_table is defined", name)
		}
		return nil, fmt.Errorf("no stick table named %q (defined: %v)", name, known)
	}
	return lt.tbl, nil
}

// lookupTable finds a table of the current config's stick_tables app.
func lookupTable(ctx caddy.Context, name string) (*table.Table, error) {
	if name == "" {
		return nil, fmt.Errorf("missing stick table name")
	}
	appIface, err := ctx.App("stick_tables")
	if err != nil {
		return nil, fmt.Errorf("loading the stick_tables app: %v", err)
	}
	return appIface.(*App).Table(name)
}

var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
