package table

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseStore feeds store clauses to the parser: it must return a field
// list that Init accepts, or an error, and never panic.
func FuzzParseStore(f *testing.F) {
	for _, seed := range []string{"http_req_rate(10s)", "gpc(2)", "gpc_rate(1,1m)", "gpc0,gpt0", "gpc1_rate(10s)",
		"conn_cnt", "ban", "bytes_out_rate(1m)", "gpc_rate(,)", "http_req_rate(", "gpc(999)", "x(1)"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fields, err := ParseStore(nil, spec, time.ParseDuration)
		if err != nil {
			return
		}
		s := &Schema{Type: KeyIP, Fields: fields}
		if err := s.Init(); err != nil {
			return
		}
		// What String prints parses back to the same schema.
		again := &Schema{Type: KeyIP}
		for _, spec := range s.StoreSpecs() {
			if again.Fields, err = ParseStore(again.Fields, spec, time.ParseDuration); err != nil {
				t.Fatalf("%q printed as %q which does not parse: %v", spec, s.StoreSpecs(), err)
			}
		}
		if err := again.Init(); err != nil || !s.Compatible(again) {
			t.Fatalf("%q: round trip through %q changed the schema", spec, strings.Join(s.StoreSpecs(), " "))
		}
	})
}

// FuzzKeys feeds traffic and admin key text to every key type: keys either
// fail or print to text that parses back to the same key.
func FuzzKeys(f *testing.F) {
	for _, seed := range []string{"192.0.2.1", "::1", "[2001:db8::1]:443", "10.0.0.0/8", "-5", "alice", "00ff", ""} {
		f.Add(seed)
	}
	schemas := []*Schema{{Type: KeyIP}, {Type: KeyIPv6, IPv6Prefix: 64, IPv4Prefix: 24}, {Type: KeyInteger},
		{Type: KeyString, KeyLen: 8}, {Type: KeyBinary, KeyLen: 4}}
	for _, s := range schemas {
		if err := s.Init(); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, s := range schemas {
			for _, parse := range []func(string) (Key, error){s.KeyFrom, s.ParseKey} {
				k, err := parse(v)
				if err != nil {
					continue
				}
				text := s.FormatKey(k)
				back, err := s.ParseKey(text)
				if err != nil || back != k {
					t.Fatalf("%s key from %q prints %q which parses to a different key (%v)", s.Type, v, text, err)
				}
			}
		}
	})
}
