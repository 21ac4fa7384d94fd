// Package build_test builds the real Caddy binary from xcaddy.json with
// xcaddy's Go package and checks what a user of that binary sees.
package build_test

import (
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

const modulePath = "github.com/rampart-edge/caddy-rampart"

// rampartModules lists the IDs of every Caddy module this repository
// registers, found by the Go package of each registered module.
func rampartModules() []string {
	var ids []string
	for _, id := range caddy.Modules() {
		info, err := caddy.GetModule(id)
		if err != nil {
			continue
		}
		typ := reflect.TypeOf(info.New())
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if strings.HasPrefix(typ.PkgPath(), modulePath+"/") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func TestBinaryFromXcaddyJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Caddy binary; skipped with -short")
	}
	bin := harness.BuildCaddy(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	recipe := harness.LoadRecipe(t)
	if version := run("version"); !strings.HasPrefix(version, recipe.CaddyVersion) {
		t.Errorf("caddy version = %q, want %s", version, recipe.CaddyVersion)
	}

	listed := map[string]bool{}
	for _, line := range strings.Split(run("list-modules"), "\n") {
		listed[strings.TrimSpace(line)] = true
	}
	want := rampartModules()
	if len(want) < 5 {
		t.Fatalf("found only %d Rampart modules in this test binary: %v", len(want), want)
	}
	for _, id := range want {
		if !listed[id] {
			t.Errorf("module %s is missing from the built binary's list-modules", id)
		}
	}

	examples, err := filepath.Glob(filepath.Join(harness.RepoRoot(t), "examples", "*", "Caddyfile"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples/*/Caddyfile (%v)", err)
	}
	for _, file := range examples {
		out, err := exec.Command(bin, "adapt", "--config", file).CombinedOutput()
		if err != nil {
			t.Errorf("caddy adapt %s: %v\n%s", file, err, out)
		}
	}
}
