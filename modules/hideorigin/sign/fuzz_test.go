package sign

import (
	"strings"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	key, _ := NewKey("fuzz-key-0123456789")
	f.Add(key.Sign(Signed{Method: "GET", Host: "a", URI: "/", Time: time.Unix(1, 0)}))
	f.Add("v=1;kid=00000000;ts=1;nonce=AAAAAAAAAAAAAAAAAAAAAA;ip=1.2.3.4;sig=" + strings.Repeat("A", 43))
	f.Add("v=1;v=1")
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := Parse(s)
		if err != nil {
			return
		}
		if sig.Version != 1 || len(sig.KeyID) != 8 || !sig.ClientIP.IsValid() {
			t.Fatalf("accepted incomplete signature %q: %+v", s, sig)
		}
		v, _ := NewVerifier([]Key{key}, time.Hour, NewReplayCache(time.Hour, 10))
		v.Verify(s, "GET", "a", "/")
	})
}
