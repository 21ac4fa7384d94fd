package stick

import (
	"strconv"
	"strings"
	"testing"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

// FuzzParseSize: the size parser never panics, returns sizes in
// 1..table.MaxSize, and every error quotes what the user wrote.
func FuzzParseSize(f *testing.F) {
	for _, seed := range []string{"1", "10k", "1m", "2g", "1000g", "0", "-1", "k", "", "99999999999999999999"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := parseSize(v)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(v)) {
				t.Fatalf("error %q does not quote %q", err, v)
			}
			return
		}
		if n < 1 || n > table.MaxSize {
			t.Fatalf("%q parsed to size %d", v, n)
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"1": 1, "10k": 10240, "1m": 1 << 20, "2g": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{"": `"" is not a positive count`, "0": `"0" is not`, "-1": `"-1" is not`,
		"1x": `"1x" is not`, "k": `"k" is not`, "1000g": `"1000g" is more than the largest table`} {
		if _, err := parseSize(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseSize(%q): %v, want an error containing %s", in, err, msg)
		}
	}
}
