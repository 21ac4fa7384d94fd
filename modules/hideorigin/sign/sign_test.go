package sign

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	oldKey, _ := NewKey("previous-key-0123456789")
	key, err := NewKey("current-key-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKey("short"); err == nil {
		t.Fatal("short key accepted")
	}
	now := time.Unix(1_800_000_000, 0)
	cache := NewReplayCache(time.Minute, 1000)
	v, err := NewVerifier([]Key{key, oldKey}, 30*time.Second, cache)
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return now }
	ip := netip.MustParseAddr("203.0.113.9")
	sign := func(k Key, at time.Time) string {
		return k.Sign(Signed{Method: "GET", Host: "example.com", URI: "/a?b=c", ClientIP: ip, Time: at})
	}
	h := sign(key, now)
	sig, err := v.Verify(h, "GET", "Example.COM", "/a?b=c")
	if err != nil || sig.ClientIP != ip || sig.KeyID != key.ID {
		t.Fatalf("valid signature refused: %v %+v", err, sig)
	}
	if _, err := v.Verify(h, "GET", "example.com", "/a?b=c"); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	if _, err := v.Verify(sign(oldKey, now), "GET", "example.com", "/a?b=c"); err != nil {
		t.Fatalf("previous key refused: %v", err)
	}
	other, _ := NewKey("some-other-key-0123456789")
	cases := []struct {
		header, method, host, uri string
		want                      error
	}{
		{"", "GET", "example.com", "/a?b=c", ErrMissing},
		{"v=1;kid=zz", "GET", "example.com", "/a?b=c", ErrMalformed},
		{sign(other, now), "GET", "example.com", "/a?b=c", ErrUnknownKey},
		{sign(key, now), "POST", "example.com", "/a?b=c", ErrBadSignature},
		{sign(key, now), "GET", "evil.com", "/a?b=c", ErrBadSignature},
		{sign(key, now), "GET", "example.com", "/a?b=d", ErrBadSignature},
		{strings.Replace(sign(key, now), "ip=203.0.113.9", "ip=203.0.113.10", 1), "GET", "example.com", "/a?b=c", ErrBadSignature},
		{sign(key, now.Add(-31*time.Second)), "GET", "example.com", "/a?b=c", ErrStale},
		{sign(key, now.Add(31*time.Second)), "GET", "example.com", "/a?b=c", ErrStale},
	}
	for i, c := range cases {
		if _, err := v.Verify(c.header, c.method, c.host, c.uri); !errors.Is(err, c.want) {
			t.Errorf("case %d: got %v, want %v", i, err, c.want)
		}
	}
	if _, err := NewVerifier(nil, time.Second, nil); err == nil {
		t.Error("verifier without keys accepted")
	}
}

func TestReplayCache(t *testing.T) {
	c := NewReplayCache(time.Minute, 2)
	t0 := time.Unix(1000, 0)
	n := func(b byte) (x [nonceLen]byte) { x[0] = b; return }
	if err := c.Add(n(1), t0); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(n(1), t0.Add(90*time.Second)); !errors.Is(err, ErrReplay) {
		t.Fatalf("nonce forgotten after one window: %v", err)
	}
	c.Add(n(2), t0.Add(90*time.Second))
	c.Add(n(3), t0.Add(90*time.Second))
	if err := c.Add(n(4), t0.Add(91*time.Second)); !errors.Is(err, ErrCacheFull) {
		t.Fatalf("full cache: %v", err)
	}
	if err := c.Add(n(1), t0.Add(5*time.Minute)); err != nil {
		t.Fatalf("nonce remembered after two windows: %v", err)
	}
	if c.Len() != 1 {
		t.Fatalf("len %d", c.Len())
	}
}
