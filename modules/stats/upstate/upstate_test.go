package upstate

import "testing"

func TestParse(t *testing.T) {
	for _, s := range []State{Ready, Drain, Maint} {
		got, err := Parse(s.String())
		if err != nil || got != s {
			t.Errorf("Parse(%q) = %v, %v", s.String(), got, err)
		}
	}
	for _, bad := range []string{"", "READY", "disabled", "drain "} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestSetAndHeld: Set records who and returns the old state; AnyHeld
// counts addresses out of selection.
func TestSetAndHeld(t *testing.T) {
	const a, b = "test-a:1", "test-b:1"
	if AnyHeld() {
		t.Fatal("held before any Set")
	}
	if old := Set(a, Drain, false, "ops"); old != Ready {
		t.Errorf("old state %v", old)
	}
	Set(a, Maint, false, "ops") // still one address held
	Set(b, Drain, false, "ops")
	if !For(a).Held() || For(a).State() != Maint || For(a).Info().By != "ops" {
		t.Errorf("a: %+v", For(a).Info())
	}
	Set(a, Ready, false, "ops")
	if !AnyHeld() {
		t.Error("b still drains")
	}
	Set(b, Ready, false, "ops")
	if AnyHeld() {
		t.Error("held after every address is ready")
	}
}

// TestKeepSticky: only a drain keeps sticky clients, and a later change
// without keep_sticky drops it.
func TestKeepSticky(t *testing.T) {
	const a = "test-sticky:1"
	t.Cleanup(func() { Set(a, Ready, false, "test") })
	Set(a, Drain, true, "ops")
	if c := For(a); !c.KeepsSticky() || !c.Held() || !c.Info().KeepSticky {
		t.Errorf("drain keep_sticky: %+v", c.Info())
	}
	Set(a, Maint, true, "ops")
	if For(a).KeepsSticky() {
		t.Error("maint keeps sticky clients")
	}
	Set(a, Drain, false, "ops")
	if For(a).KeepsSticky() {
		t.Error("a plain drain keeps sticky clients")
	}
}

func TestJoinLeave(t *testing.T) {
	m := &Member{Kind: "passthrough", Group: "r", Addr: "test-c:1", Active: func() int64 { return 0 }, Healthy: func() bool { return true }}
	leave := Join(m)
	if !Known("test-c:1") || len(Members()) == 0 {
		t.Fatal("joined member unknown")
	}
	leave()
	leave() // idempotent
	if Known("test-c:1") {
		t.Error("member still known after leave")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"ready", "drain", "maint", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := Parse(s)
		if err == nil && st.String() != s {
			t.Errorf("Parse(%q) = %v", s, st)
		}
	})
}
