package build_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataRaceFailsTheRun checks that, in the environment the test command
// runs in, `go test -race` reports a data race as a failure: a module with
// one racy test must make go test exit non-zero with "DATA RACE" and
// "race detected during execution of test" (the testing package fails the
// test itself, whatever GORACE's exitcode says).
func TestDataRaceFailsTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test -race on a scratch module; skipped with -short")
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module racy\n\ngo 1.26.0\n",
		"racy_test.go": `package racy

import "testing"

func TestRace(t *testing.T) {
	n := 0
	done := make(chan bool)
	go func() { n++; done <- true }()
	n++
	<-done
	_ = n
}
`,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-race", "-count=1", ".")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("go test -race passed a module with a data race (GORACE=%q):\n%s", os.Getenv("GORACE"), out)
	}
	for _, want := range []string{"WARNING: DATA RACE", "race detected during execution of test", "FAIL"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("go test -race output lacks %q:\n%s", want, out)
		}
	}
}
