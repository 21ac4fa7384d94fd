package stick

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/cluster/redis"
	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

// Sharing modes of a table (TableConfig.Shared).
const (
	sharedAsync  = "async"
	sharedStrict = "strict"
)

// clusterApp is what a shared table needs of the stick_cluster app, reached
// by module name so that this glue does not import the cluster glue.
type clusterApp interface {
	Redis() goredis.UniversalClient
	Node() string
	SyncInterval() time.Duration
	OpTimeout() time.Duration
	DenyOnOutage() bool
}

// shared is the sync state of one shared table in one config.
type shared struct {
	lt     *liveTable
	syncer *redis.Syncer
	cols   []table.Column
	every  time.Duration
	deny   bool
	outage atomic.Bool
	logged atomic.Int64 // Unix ns of the last outage log
	logger *zap.Logger
	// strict tables: the request path's increments go through the batcher
	// (started with the app), each waiting at most timeout.
	strict  bool
	timeout time.Duration
	batcher *redis.Batcher
}

// provisionShared makes the shared tables' syncers; the stick_cluster app
// must be configured.
func (a *App) provisionShared(ctx caddy.Context) error {
	var names []string
	for name, tc := range a.Tables {
		if tc.Shared != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	appIface, err := ctx.AppIfConfigured("stick_cluster")
	if err != nil {
		return fmt.Errorf("stick_table %s: shared needs the stick_cluster global option: %v", names[0], err)
	}
	cl, ok := appIface.(clusterApp)
	if !ok {
		return fmt.Errorf("stick_table %s: the stick_cluster app has no Redis client", names[0])
	}
	for _, name := range names {
		lt := a.tables[name]
		strict := a.Tables[name].Shared == sharedStrict
		spec := redis.TableSpec{Name: name, Expire: time.Duration(a.Tables[name].Expire), Strict: strict}
		for _, c := range lt.schema.Columns() {
			spec.Columns = append(spec.Columns, redis.Column{Name: c.Name, Kind: columnKind(lt.schema, c), Period: columnPeriod(lt.schema, c)})
		}
		a.shared = append(a.shared, &shared{
			lt: lt, cols: lt.schema.Columns(), every: cl.SyncInterval(), deny: cl.DenyOnOutage(), logger: a.logger,
			strict: strict, timeout: cl.OpTimeout(),
			syncer: redis.NewSyncer(cl.Redis(), cl.Node(), spec, cl.SyncInterval()),
		})
	}
	return nil
}

// columnKind says how a column combines across edges.
func columnKind(s *table.Schema, c table.Column) redis.ColumnKind {
	switch f := s.FieldOf(c); {
	case f.Kind == table.ConnCur || f.Kind == table.ReqCur:
		return redis.Gauge
	case f.Kind == table.GPT || f.Kind == table.ServerID || f.Kind == table.Ban:
		return redis.Value
	case f.Period > 0:
		return redis.Rate
	}
	return redis.Counter
}

func columnPeriod(s *table.Schema, c table.Column) time.Duration { return s.FieldOf(c).Period }

// runShared starts the strict tables' batchers, makes the shared tables
// count through them, and syncs every shared table until ctx ends, then
// once more so that the last deltas reach Redis. Sync rounds are aligned on
// the wall clock: every edge pushes at the multiples of sync (k × sync) and
// pulls the totals at k × sync + pullDelay, so that the pull of a round sees
// the pushes of that round from every edge whose clock is within pullDelay
// of this one's (minus the push's own duration).
func (a *App) runShared(ctx context.Context) {
	for _, sh := range a.shared {
		if sh.strict {
			sh.batcher = redis.NewBatcher(ctx, sh.syncer, sh.timeout)
			a.syncing.Go(func() { <-sh.batcher.Done() })
		}
		sh.lt.sharing.Store(sh)
	}
	for _, sh := range a.shared {
		a.syncing.Go(func() {
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			wait := func(d time.Duration) bool {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return false
				case <-timer.C:
					return true
				}
			}
			for {
				if !wait(sh.untilRound(time.Now(), 0)) {
					break
				}
				sh.sync(ctx, true)
				if !wait(sh.untilRound(time.Now(), sh.pullDelay())) {
					break
				}
				sh.sync(ctx, false)
			}
			final, cancel := context.WithTimeout(context.Background(), 5*sh.every)
			sh.sync(final, true)
			cancel()
		})
	}
}

// pullDelay is how long after the push of a round an edge pulls: the
// timeout, which bounds the other edges' pushes, at most half a sync.
func (sh *shared) pullDelay() time.Duration { return min(sh.timeout, sh.every/2) }

// untilRound returns how long from now until the next instant k × sync +
// offset.
func (sh *shared) untilRound(now time.Time, offset time.Duration) time.Duration {
	every := sh.every.Nanoseconds()
	next := (now.UnixNano()-offset.Nanoseconds())/every*every + every + offset.Nanoseconds()
	return time.Duration(next - now.UnixNano())
}

// sync runs one sync round of the table: with push, it sends what was
// counted locally since the last push; it always pulls the totals.
func (sh *shared) sync(ctx context.Context, push bool) {
	tbl := sh.lt.tbl
	var changes []redis.Change
	now := tbl.Now()
	if push {
		tbl.CollectDeltas(func(d table.Delta) {
			c := redis.Change{Key: d.Key.Bytes(sh.lt.schema), Adds: d.Adds, Values: d.Values, Set: d.Set}
			for i := range sh.cols {
				c.Values[i] = sh.toRedis(i, c.Values[i], now)
			}
			changes = append(changes, c)
		})
	}
	start := time.Now()
	totals, err := sh.syncer.Sync(ctx, changes, nil)
	syncSeconds.WithLabelValues(sh.lt.name).Observe(time.Since(start).Seconds())
	if err != nil {
		syncErrors.WithLabelValues(sh.lt.name).Inc()
		sh.unreachable(err)
		return
	}
	sh.reachable()
	remote := make([]table.Remote, len(sh.cols))
	for _, t := range totals {
		k, ok := sh.lt.schema.KeyFromBytes(t.Key)
		if !ok {
			continue
		}
		_ = tbl.Merge(k, sh.remote(t, remote)) // a full table keeps its entries: the key waits for the next sync
	}
}

// toRedis is the value of column i as Redis keeps it: a ban, which the
// table holds as milliseconds left, is stored as its deadline (Unix ms) so
// that every edge reads the same moment.
func (sh *shared) toRedis(i int, v uint64, now int64) uint64 {
	if v != 0 && sh.lt.schema.FieldOf(sh.cols[i]).Kind == table.Ban {
		return v + uint64(now)
	}
	return v
}

// fromRedis is the value of column i as the table holds it (toRedis undone).
func (sh *shared) fromRedis(i int, v uint64, now int64) uint64 {
	if sh.lt.schema.FieldOf(sh.cols[i]).Kind == table.Ban {
		return uint64(max(int64(v)-now, 0))
	}
	return v
}

// remote fills buf with the cluster values of t for Merge.
func (sh *shared) remote(t redis.Total, buf []table.Remote) []table.Remote {
	now := sh.lt.tbl.Now()
	for i, col := range sh.cols {
		buf[i] = table.Remote{Column: col, Value: sh.fromRedis(i, t.Values[i], now)}
	}
	return buf
}

// unreachable records that Redis could not be reached: the outage state,
// and a log line at most once a second.
func (sh *shared) unreachable(err error) {
	sh.outage.Store(true)
	if last := sh.logged.Load(); time.Since(time.Unix(0, last)) >= time.Second && sh.logged.CompareAndSwap(last, time.Now().UnixNano()) {
		sh.logger.Warn("stick cluster: Redis unreachable, counting locally", zap.String("table", sh.lt.name), zap.Error(err))
	}
}

// reachable ends the outage state.
func (sh *shared) reachable() {
	if sh.outage.Swap(false) {
		sh.logger.Info("stick cluster: Redis reachable again, resynchronised", zap.String("table", sh.lt.name))
	}
}

// acquire holds the entry of k in tbl (lt's table; lt may be nil) for ev. On a strict table it first applies
// ev's increments in Redis (waiting at most the timeout) and returns the
// request's own view of the entry (nil otherwise) and whether the release
// must be sent to Redis too. When Redis cannot be reached, a strict table
// counts locally (the sync pushes it later), or with on_outage deny
// returns errOutageDeny.
func (lt *liveTable) acquire(ctx context.Context, tbl *table.Table, k table.Key, ev table.Events) (ref table.Ref, view []uint64, strict *shared, err error) {
	var sh *shared
	if lt != nil {
		sh = lt.sharing.Load()
	}
	if sh == nil || sh.batcher == nil {
		ref, err = tbl.Acquire(k, ev)
		return ref, nil, nil, err
	}
	inc := redis.Increment{Key: k.Bytes(lt.schema), Adds: lt.schema.Adds(ev)}
	t, _, err := sh.batcher.Add(ctx, inc)
	if err != nil {
		strictErrors.WithLabelValues(lt.name).Inc()
		sh.unreachable(err)
		if sh.deny {
			return table.Ref{}, nil, nil, errOutageDeny
		}
		ref, err = lt.tbl.Acquire(k, ev)
		return ref, nil, nil, err
	}
	sh.reachable()
	ref, view, err = lt.tbl.AcquireMerged(k, ev, sh.remote(t, make([]table.Remote, len(sh.cols))))
	return ref, view, sh, err
}

// publish writes the gpt, server_id and ban values of the entry of ref to
// Redis, waiting at most the timeout (a strict table's write: when it
// returns, every edge's next request reads it). On error the sync loop
// pushes the values later.
func (sh *shared) publish(ctx context.Context, ref table.Ref) {
	tbl := sh.lt.tbl
	k, ok := tbl.Key(ref)
	if !ok {
		return
	}
	inc := redis.Increment{Key: k.Bytes(sh.lt.schema), Adds: make([]int64, len(sh.cols)), Values: make([]uint64, len(sh.cols)), Set: true}
	now := tbl.Now()
	for i, col := range sh.cols {
		v, _ := tbl.Get(ref, col)
		inc.Values[i] = sh.toRedis(i, v, now)
	}
	if _, _, err := sh.batcher.Add(ctx, inc); err != nil {
		strictErrors.WithLabelValues(sh.lt.name).Inc()
		sh.unreachable(err)
	}
}

// release ends what acquire started; a strict acquire's gauge change is
// sent to Redis without waiting.
func (sh *shared) release(k table.Key, ev table.Events) {
	if sh == nil {
		return
	}
	if !sh.batcher.Release(redis.Increment{Key: k.Bytes(sh.lt.schema), Adds: sh.lt.schema.Adds(ev)}) {
		strictErrors.WithLabelValues(sh.lt.name).Inc()
	}
}

// errOutageDeny is the error of requests refused by on_outage deny.
var errOutageDeny = errors.New("stick cluster: Redis unreachable and on_outage is deny")

// liveTableOf returns the named table of the config's stick_tables app (nil
// when there is none; lookupTable reports that).
func liveTableOf(ctx caddy.Context, name string) *liveTable {
	appIface, err := ctx.App("stick_tables")
	if err != nil {
		return nil
	}
	return appIface.(*App).tables[name]
}

// denied reports whether the table refuses traffic now: it is shared with
// on_outage deny and Redis is unreachable.
func (lt *liveTable) denied() bool {
	if lt == nil {
		return false
	}
	sh := lt.sharing.Load()
	return sh != nil && sh.deny && sh.outage.Load()
}

// ClusterInfo is the cluster state of a shared table in GET /stick-tables/.
type ClusterInfo struct {
	// Sharing mode: async or strict.
	Mode string `json:"mode"`
	// Whether the last sync reached Redis.
	Connected bool `json:"connected"`
	// Time of the last successful sync (RFC 3339), empty before the first.
	LastSync string `json:"last_sync,omitempty"`
	// Edges that synced within the last 2.5 × sync.
	Edges []string `json:"edges"`
	// Sync rounds, failed rounds and Redis round trips since the start.
	Syncs      uint64 `json:"syncs"`
	Errors     uint64 `json:"errors"`
	RoundTrips uint64 `json:"round_trips"`
}

func (sh *shared) info() *ClusterInfo {
	st := sh.syncer.Stats()
	mode := sharedAsync
	if sh.strict {
		mode = sharedStrict
	}
	ci := &ClusterInfo{Mode: mode, Connected: st.Connected, Edges: st.Edges, Syncs: st.Syncs, Errors: st.Errors, RoundTrips: st.RoundTrips}
	if !st.LastSync.IsZero() {
		ci.LastSync = st.LastSync.UTC().Format(time.RFC3339Nano)
	}
	if ci.Edges == nil {
		ci.Edges = []string{}
	}
	return ci
}

var (
	syncSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "rampart", Subsystem: "cluster", Name: "sync_duration_seconds",
		Help:    "Duration of one sync round of a shared stick table with Redis.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"table"})
	strictErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "cluster", Name: "strict_errors_total",
		Help: "Increments of a strict shared stick table that did not reach Redis in time (counted locally or refused).",
	}, []string{"table"})
	syncErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rampart", Subsystem: "cluster", Name: "sync_errors_total",
		Help: "Sync rounds of a shared stick table that failed to reach Redis.",
	}, []string{"table"})
	roundTripsDesc = prometheus.NewDesc("rampart_cluster_redis_round_trips_total", "Pipelined Redis round trips of a shared stick table's syncs.", []string{"table"}, nil)
	outageDesc     = prometheus.NewDesc("rampart_cluster_outage", "1 while the last sync of a shared stick table failed to reach Redis.", []string{"table"}, nil)
	edgesDesc      = prometheus.NewDesc("rampart_cluster_edges", "Edges that synced a shared stick table within the last 2.5 × sync.", []string{"table"}, nil)
	lostDesc       = prometheus.NewDesc("rampart_cluster_lost_deltas_total", "Entry deltas dropped because Redis confirmed none of the last 64 batches.", []string{"table"}, nil)
)

// clusterCollector reports the syncers of one config's app.
type clusterCollector struct{ app *App }

// Describe implements prometheus.Collector.
func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- roundTripsDesc
	ch <- outageDesc
	ch <- edgesDesc
	ch <- lostDesc
}

// Collect implements prometheus.Collector.
func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, sh := range c.app.shared {
		st := sh.syncer.Stats()
		outage := 0.0
		if sh.outage.Load() {
			outage = 1
		}
		ch <- prometheus.MustNewConstMetric(roundTripsDesc, prometheus.CounterValue, float64(st.RoundTrips), sh.lt.name)
		ch <- prometheus.MustNewConstMetric(outageDesc, prometheus.GaugeValue, outage, sh.lt.name)
		ch <- prometheus.MustNewConstMetric(edgesDesc, prometheus.GaugeValue, float64(len(st.Edges)), sh.lt.name)
		ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(st.Lost), sh.lt.name)
	}
}
