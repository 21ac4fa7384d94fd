package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/xcaddy"
)

// LoadRecipe reads xcaddy.json, the pinned build recipe, and points its
// relative replacements ("." is this checkout) at absolute paths.
func LoadRecipe(t testing.TB) xcaddy.Builder {
	t.Helper()
	root := RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "xcaddy.json"))
	if err != nil {
		t.Fatalf("reading xcaddy.json: %v", err)
	}
	var b xcaddy.Builder
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("xcaddy.json is not an xcaddy Builder: %v", err)
	}
	for i, r := range b.Replacements {
		if !filepath.IsAbs(string(r.New)) && (strings.HasPrefix(string(r.New), ".")) {
			b.Replacements[i].New = xcaddy.ReplacementPath(filepath.Join(root, string(r.New)))
		}
	}
	return b
}

// BuildCaddy builds the real Caddy binary from xcaddy.json with xcaddy's Go
// package and returns its path. The binary is reused by later calls (and
// later test processes) while the sources it is built from are unchanged.
func BuildCaddy(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	dir := filepath.Join(os.TempDir(), "rampart-xcaddy", sourceHash(t, root))
	bin := filepath.Join(dir, "caddy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Test packages run in parallel: the first to take the lock builds,
	// the others wait for it and reuse the binary.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("locking %s: %v", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	b := LoadRecipe(t)
	b.TimeoutBuild = 15 * time.Minute
	b.TimeoutGet = 5 * time.Minute
	tmp := bin + ".partial"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := b.Build(ctx, tmp); err != nil {
		t.Fatalf("xcaddy build from xcaddy.json: %v", err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// sourceHash fingerprints what the binary is built from.
func sourceHash(t testing.TB, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && (strings.HasPrefix(name, ".") && path != root || name == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		if strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" || name == "xcaddy.json" {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write([]byte(path))
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("hashing sources: %v", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
