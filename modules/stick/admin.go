package stick

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves /stick-tables/ under Caddy's admin endpoint:
//
//	GET    /stick-tables/                     the tables: type, size, used, expire, data types
//	GET    /stick-tables/<name>?filter=&sort=&order=&limit=   entries as JSON
//	DELETE /stick-tables/<name>[?filter=...]  delete the matching (or all) entries
//	GET    /stick-tables/<name>/<key>         one entry
//	DELETE /stick-tables/<name>/<key>         delete one entry
//	PUT    /stick-tables/<name>/<key>         set values: {"gpc0": 1, "gpt0": 3, "ban": "10m"}
//
// Errors are 4xx JSON objects {"error": "..."} naming the problem. The
// router is provisioned with each config, as Caddy's PKI admin API is, and
// serves that config's stick_tables app.
type adminAPI struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.stick_tables", New: func() caddy.Module { return new(adminAPI) }}
}

// Provision finds the config's stick_tables app, if it has one.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("stick_tables")
	if err == nil {
		a.app = app.(*App)
	}
	return nil
}

// Routes returns the /stick-tables/ route.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/stick-tables/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func apiErr(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// defaultLimit caps listings unless limit= says otherwise (0: no cap).
const defaultLimit = 1000

// TableInfo is one table in GET /stick-tables/.
type TableInfo struct {
	// The table's name.
	Name string `json:"name"`
	// Its key type.
	Type string `json:"type"`
	// Maximum entries.
	Size int `json:"size"`
	// Entries now.
	Used int `json:"used"`
	// Idle lifetime of entries ("0s": none).
	Expire string `json:"expire"`
	// Stored data types, as store keywords.
	Data []string `json:"data"`
	// Cluster state of a shared table (absent for a local one).
	Cluster *ClusterInfo `json:"cluster,omitempty"`
}

// EntryJSON is one entry: its key, time left before expiry, holders (live
// connections and requests) and every stored value (ban in milliseconds
// left).
type EntryJSON struct {
	// The key as text (address, prefix, decimal, string, or hex).
	Key string `json:"key"`
	// Time left before expiry, e.g. "9m59.9s" (the full expire while held).
	ExpiresIn string `json:"expires_in"`
	// The same in milliseconds.
	ExpiresInMs int64 `json:"expires_in_ms"`
	// Live connections and requests holding the entry.
	Use int `json:"use"`
	// Every stored value by name (ban: milliseconds left); cluster-wide in
	// a shared table.
	Values map[string]uint64 `json:"values"`
	// In a shared table, this edge's share of the summed values: its own
	// counts and rates, its gauges (gpt, server_id and ban are not summed).
	Edge map[string]uint64 `json:"edge,omitempty"`
}

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	app := a.app
	if app == nil {
		return apiErr(http.StatusNotFound, "no stick tables are configured")
	}
	rest := strings.TrimPrefix(r.URL.Path, "/stick-tables/")
	if rest == "" {
		if r.Method != http.MethodGet {
			return apiErr(http.StatusMethodNotAllowed, "method %s not allowed on /stick-tables/ (use GET)", r.Method)
		}
		return writeJSON(w, listTables(app))
	}
	name, keyText, hasKey := strings.Cut(rest, "/")
	lt, ok := app.tables[name]
	if !ok {
		return apiErr(http.StatusNotFound, "no stick table named %q", name)
	}
	if !hasKey {
		switch r.Method {
		case http.MethodGet:
			return listEntries(w, lt, r.URL.Query())
		case http.MethodDelete:
			return deleteEntries(w, lt, r.URL.Query())
		}
		return apiErr(http.StatusMethodNotAllowed, "method %s not allowed on a table (use GET or DELETE)", r.Method)
	}
	k, err := lt.schema.ParseKey(keyText)
	if err != nil {
		return apiErr(http.StatusBadRequest, "table %s: %v", name, err)
	}
	switch r.Method {
	case http.MethodGet:
		e, ok := lt.tbl.Snapshot(k)
		if !ok {
			return apiErr(http.StatusNotFound, "table %s has no entry %q", name, keyText)
		}
		return writeJSON(w, entryJSON(lt, e))
	case http.MethodDelete:
		if !lt.tbl.Delete(k) {
			return apiErr(http.StatusNotFound, "table %s has no entry %q", name, keyText)
		}
		return writeJSON(w, map[string]int{"deleted": 1})
	case http.MethodPut:
		writes, err := parsePut(lt, http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			return err
		}
		if err := lt.tbl.Put(k, writes); err != nil {
			return apiErr(http.StatusConflict, "table %s: %v", name, err)
		}
		e, _ := lt.tbl.Snapshot(k)
		return writeJSON(w, entryJSON(lt, e))
	}
	return apiErr(http.StatusMethodNotAllowed, "method %s not allowed on an entry (use GET, PUT or DELETE)", r.Method)
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func listTables(app *App) []TableInfo {
	out := make([]TableInfo, 0, len(app.tables))
	for name, lt := range app.tables {
		ti := TableInfo{
			Name: name, Type: lt.schema.Type.String(), Size: lt.tbl.Size(), Used: lt.tbl.Len(),
			Expire: table.FormatDuration(lt.tbl.Expire()), Data: lt.schema.StoreSpecs(),
		}
		if sh := lt.sharing.Load(); sh != nil {
			ti.Cluster = sh.info()
		}
		out = append(out, ti)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func entryJSON(lt *liveTable, e table.Entry) EntryJSON {
	cols := lt.schema.Columns()
	v := make(map[string]uint64, len(cols))
	var own map[string]uint64
	if e.Own != nil {
		own = make(map[string]uint64, len(cols))
	}
	for i, c := range cols {
		v[c.Name] = e.Values[i]
		if own != nil && e.OwnOK[i] {
			own[c.Name] = e.Own[i]
		}
	}
	return EntryJSON{
		Key: lt.schema.FormatKey(e.Key), ExpiresIn: e.ExpiresIn.String(),
		ExpiresInMs: e.ExpiresIn.Milliseconds(), Use: e.Holders, Values: v, Edge: own,
	}
}

// filter is one `filter=<data><op><value>` (ops > >= < <= = != == or
// the words gt ge lt le eq ne separated by spaces) or `filter=banned`: a
// condition of the matchers' grammar, evaluated on listed entries.
type filter struct {
	idx  int // of the condition's value in Entry.Values
	cond compiled
}

// symbolOps are the filter's comparison symbols, as the grammar's words.
var symbolOps = []struct{ sym, word string }{{">=", "ge"}, {"<=", "le"}, {"!=", "ne"}, {"==", "eq"}, {">", "gt"}, {"<", "lt"}, {"=", "eq"}}

// filterArgs splits a filter into the condition grammar's arguments:
// `banned`, `<data> <op> <value>` with spaces, or `<data><sym><value>`.
func filterArgs(text string) []string {
	if f := strings.Fields(text); len(f) == 1 && f[0] == "banned" || len(f) == 3 {
		return f
	}
	for _, so := range symbolOps {
		if i := strings.Index(text, so.sym); i > 0 {
			return []string{strings.TrimSpace(text[:i]), so.word, strings.TrimSpace(text[i+len(so.sym):])}
		}
	}
	return nil
}

func parseFilter(lt *liveTable, text string) (filter, error) {
	args := filterArgs(text)
	if args == nil {
		return filter{}, apiErr(http.StatusBadRequest, "filter %q: want <data><op><value>, e.g. http_req_rate>100, or banned", text)
	}
	c, err := parseOneCondition(args, fmt.Sprintf("filter %q", text))
	if err != nil {
		return filter{}, apiErr(http.StatusBadRequest, "%v", err)
	}
	cc, err := c.compile(lt.name, lt.tbl)
	if err != nil {
		return filter{}, apiErr(http.StatusBadRequest, "filter %q: %v", text, err)
	}
	name := c.Data
	if c.Banned {
		name = "ban"
	}
	for i, col := range lt.schema.Columns() {
		if col.Name == name {
			return filter{idx: i, cond: cc}, nil
		}
	}
	return filter{}, apiErr(http.StatusBadRequest, "filter %q: the table does not store %q", text, name)
}

func parseFilters(lt *liveTable, q url.Values) ([]filter, error) {
	var fs []filter
	for _, text := range q["filter"] {
		f, err := parseFilter(lt, text)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

func (f filter) match(e table.Entry) bool {
	if f.cond.banned {
		return e.Values[f.idx] > 0
	}
	return f.cond.op(e.Values[f.idx], f.cond.value)
}

func matchAll(fs []filter, e table.Entry) bool {
	for _, f := range fs {
		if !f.match(e) {
			return false
		}
	}
	return true
}

func listEntries(w http.ResponseWriter, lt *liveTable, q url.Values) error {
	fs, err := parseFilters(lt, q)
	if err != nil {
		return err
	}
	limit := defaultLimit
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return apiErr(http.StatusBadRequest, "limit %q is not a non-negative integer", v)
		}
	}
	sortIdx := -1
	if s := q.Get("sort"); s != "" && s != "key" {
		for i, c := range lt.schema.Columns() {
			if c.Name == s {
				sortIdx = i
			}
		}
		if sortIdx < 0 {
			return apiErr(http.StatusBadRequest, "sort %q: the table does not store it (sort by key or a stored value)", s)
		}
	}
	desc := sortIdx >= 0
	switch o := q.Get("order"); o {
	case "":
	case "asc":
		desc = false
	case "desc":
		desc = true
	default:
		return apiErr(http.StatusBadRequest, "order %q: want asc or desc", o)
	}
	for k := range q {
		if k != "filter" && k != "limit" && k != "sort" && k != "order" {
			return apiErr(http.StatusBadRequest, "unknown query parameter %q (use filter, sort, order, limit)", k)
		}
	}
	var entries []table.Entry
	lt.tbl.Range(func(e table.Entry) bool {
		if matchAll(fs, e) {
			entries = append(entries, e)
		}
		// Without sorting, stop as soon as the page is full.
		return sortIdx >= 0 || q.Get("sort") == "key" || limit == 0 || len(entries) < limit
	})
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = lt.schema.FormatKey(e.Key)
	}
	idx := make([]int, len(entries))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ea, eb := entries[idx[a]], entries[idx[b]]
		if sortIdx >= 0 && ea.Values[sortIdx] != eb.Values[sortIdx] {
			if desc {
				return ea.Values[sortIdx] > eb.Values[sortIdx]
			}
			return ea.Values[sortIdx] < eb.Values[sortIdx]
		}
		if desc && sortIdx < 0 {
			return keys[idx[a]] > keys[idx[b]]
		}
		return keys[idx[a]] < keys[idx[b]]
	})
	if limit > 0 && len(idx) > limit {
		idx = idx[:limit]
	}
	out := make([]EntryJSON, 0, len(idx))
	for _, i := range idx {
		out = append(out, entryJSON(lt, entries[i]))
	}
	return writeJSON(w, out)
}

func deleteEntries(w http.ResponseWriter, lt *liveTable, q url.Values) error {
	for k := range q {
		if k != "filter" {
			return apiErr(http.StatusBadRequest, "unknown query parameter %q for DELETE (use filter)", k)
		}
	}
	fs, err := parseFilters(lt, q)
	if err != nil {
		return err
	}
	var doomed []table.Key
	lt.tbl.Range(func(e table.Entry) bool {
		if matchAll(fs, e) {
			doomed = append(doomed, e.Key)
		}
		return true
	})
	n := 0
	for _, k := range doomed {
		if lt.tbl.Delete(k) {
			n++
		}
	}
	return writeJSON(w, map[string]int{"deleted": n})
}

// errTrailing reports data after the PUT body's JSON object.
var errTrailing = errors.New("trailing data")

// maxBody is the largest PUT body.
const maxBody = 1 << 20

// parsePut reads {"<data>": <number>, "ban": "<duration>"|<ms>} into
// writes: one JSON object and nothing after it, at most 1 MiB.
func parsePut(lt *liveTable, body io.Reader) ([]table.Write, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(body)
	err := dec.Decode(&raw)
	var tooBig *http.MaxBytesError
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			err = nil
		} else if !errors.As(err, &tooBig) {
			err = errTrailing
		}
	}
	switch {
	case errors.As(err, &tooBig):
		return nil, apiErr(http.StatusRequestEntityTooLarge, "body is larger than 1 MiB")
	case err == errTrailing:
		return nil, apiErr(http.StatusBadRequest, "trailing data after the JSON object")
	case err != nil:
		return nil, apiErr(http.StatusBadRequest, "body is not a JSON object of values: %v", err)
	}
	if len(raw) == 0 {
		return nil, apiErr(http.StatusBadRequest, "body sets no value (e.g. {\"gpc0\": 1, \"ban\": \"10m\"})")
	}
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	writes := make([]table.Write, 0, len(raw))
	for _, name := range names {
		col, err := lt.schema.Column(name)
		if err != nil {
			return nil, apiErr(http.StatusBadRequest, "%v", err)
		}
		var v uint64
		var s string
		switch {
		case json.Unmarshal(raw[name], &v) == nil:
		case name == "ban" && json.Unmarshal(raw[name], &s) == nil:
			d, err := caddy.ParseDuration(s)
			if err != nil || d < 0 {
				return nil, apiErr(http.StatusBadRequest, "ban %q is not a duration such as \"10m\" (%v)", s, err)
			}
			v = uint64(d / time.Millisecond)
		default:
			return nil, apiErr(http.StatusBadRequest, "%s: %s is not a non-negative integer%s", name, raw[name],
				map[bool]string{true: " or a duration string such as \"10m\"", false: ""}[name == "ban"])
		}
		writes = append(writes, table.Write{Column: col, Value: v})
	}
	return writes, nil
}

var (
	_ caddy.AdminRouter = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
)
