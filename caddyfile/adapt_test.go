package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rampart-edge/caddy-rampart"
)

// goldenSeparator splits a .caddytest file into the Caddyfile and the JSON it
// must adapt to (the format of caddy-l4's caddyfile_adapt tests).
const goldenSeparator = "\n----------\n"

// TestAdaptGolden adapts every testdata/*.caddytest Caddyfile and compares the
// JSON with the expected half of the file. RAMPART_UPDATE_GOLDEN=1 rewrites
// the expected JSON from the current output.
func TestAdaptGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddytest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddytest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfileText, expected, found := strings.Cut(string(data), goldenSeparator)
			if !found {
				t.Fatalf("%s has no %q separator", file, strings.TrimSpace(goldenSeparator))
			}
			got := adaptIndented(t, caddyfileText+"\n")
			if os.Getenv("RAMPART_UPDATE_GOLDEN") == "1" {
				out := caddyfileText + goldenSeparator + got + "\n"
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.TrimSpace(got) != strings.TrimSpace(expected) {
				t.Errorf("adapted JSON differs from %s\n--- got\n%s\n--- want\n%s", file, got, expected)
			}
		})
	}
}

func adaptIndented(t *testing.T, caddyfileText string) string {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt([]byte(caddyfileText), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("adapt warning: %s", w.String())
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestAdaptErrors checks that bad Caddyfile input fails with an error that
// names the directive and the offending value: every testdata/errors/*.caddytest
// holds a Caddyfile, the separator, and a substring the error must contain.
func TestAdaptErrors(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "errors", "*.caddytest"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddytest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfileText, want, found := strings.Cut(string(data), goldenSeparator)
			if !found {
				t.Fatalf("%s has no separator", file)
			}
			adapter := caddyconfig.GetAdapter("caddyfile")
			_, _, err = adapter.Adapt([]byte(caddyfileText+"\n"), map[string]any{"filename": "Caddyfile"})
			if err == nil {
				t.Fatalf("adapting succeeded; want an error containing %q", strings.TrimSpace(want))
			}
			for _, line := range strings.Split(strings.TrimSpace(want), "\n") {
				if !strings.Contains(err.Error(), strings.TrimSpace(line)) {
					t.Errorf("error %q does not contain %q", err, strings.TrimSpace(line))
				}
			}
		})
	}
}
