package redis

import (
	"strings"
	"testing"
	"time"
)

func TestTargetOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		target  Target
		wantErr string
	}{
		{"single", Target{URLs: []string{"redis://127.0.0.1:6379/2"}, Timeout: time.Second}, ""},
		{"tls and password", Target{URLs: []string{"rediss://u:secret@127.0.0.1:6380/0"}, Timeout: time.Second}, ""},
		{"cluster", Target{URLs: []string{"redis://127.0.0.1:7000", "redis://127.0.0.1:7001"}, Timeout: time.Second}, ""},
		{"sentinel", Target{URLs: []string{"redis://127.0.0.1:26379/1"}, SentinelMaster: "m", Timeout: time.Second}, ""},
		{"none", Target{Timeout: time.Second}, "no Redis address"},
		{"no timeout", Target{URLs: []string{"redis://127.0.0.1"}}, "timeout must be positive"},
		{"scheme", Target{URLs: []string{"http://127.0.0.1"}, Timeout: time.Second}, "invalid URL scheme"},
		{"unix", Target{URLs: []string{"unix:///tmp/r.sock"}, Timeout: time.Second}, "only redis:// and rediss://"},
		{"mismatch", Target{URLs: []string{"redis://:a@127.0.0.1:7000", "redis://:b@127.0.0.1:7001"}, Timeout: time.Second}, "must match the first"},
		{"cluster db", Target{URLs: []string{"redis://127.0.0.1:7000/3", "redis://127.0.0.1:7001/3"}, Timeout: time.Second}, "only database 0"},
		{"bad db", Target{URLs: []string{"redis://127.0.0.1/x"}, Timeout: time.Second}, "invalid database number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.target.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), ":a@") {
				t.Fatalf("error shows a password: %v", err)
			}
		})
	}
}

func TestTargetStringRedactsPasswords(t *testing.T) {
	s := Target{URLs: []string{"redis://u:secret@127.0.0.1:6379/0", "::bad"}, SentinelMaster: "m"}.String()
	if strings.Contains(s, "secret") {
		t.Fatalf("password in %q", s)
	}
	if !strings.HasPrefix(s, "sentinel m redis://u:xxxxx@127.0.0.1:6379/0") {
		t.Fatalf("String() = %q", s)
	}
}

// FuzzTargetValidate: any address is accepted or refused without a panic,
// and a refusal never shows the password of its userinfo.
func FuzzTargetValidate(f *testing.F) {
	f.Add("127.0.0.1:6379/0", "")
	f.Add("[::1]:6380", "redis://127.0.0.1:6381")
	f.Add("127.0.0.1/x?dial_timeout=abc", "")
	f.Add("%zz", "")
	f.Fuzz(func(t *testing.T, rest, second string) {
		urls := []string{"redis://u:S3CRETPW@" + rest}
		if second != "" {
			urls = append(urls, second)
		}
		err := Target{URLs: urls, Timeout: time.Second}.Validate()
		if err != nil && strings.Contains(err.Error(), "S3CRETPW") {
			t.Fatalf("password shown: %v", err)
		}
	})
}
