package cluster

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestRedisConfigUnmarshal(t *testing.T) {
	t.Setenv("RAMPART_TEST_REDIS_PASSWORD", "s3cret")
	for _, tc := range []struct {
		input, wantErr string
		want           RedisConfig
	}{
		{input: "redis redis://:{env.RAMPART_TEST_REDIS_PASSWORD}@127.0.0.1:6379/1", want: RedisConfig{Addresses: []string{"redis://:{env.RAMPART_TEST_REDIS_PASSWORD}@127.0.0.1:6379/1"}}},
		{input: "redis redis://127.0.0.1:7000 redis://127.0.0.1:7001", want: RedisConfig{Addresses: []string{"redis://127.0.0.1:7000", "redis://127.0.0.1:7001"}}},
		{input: "redis cluster redis://127.0.0.1:7000", want: RedisConfig{Addresses: []string{"redis://127.0.0.1:7000"}, Cluster: true}},
		{input: "redis sentinel mymaster redis://127.0.0.1:26379", want: RedisConfig{Addresses: []string{"redis://127.0.0.1:26379"}, SentinelMaster: "mymaster"}},
		{input: "redis", wantErr: "wrong argument count"},
		{input: "redis sentinel mymaster", wantErr: "needs a master name"},
		{input: "redis\nredis http://127.0.0.1", wantErr: "Testfile:2"},
	} {
		d := caddyfile.NewTestDispenser(tc.input)
		d.Next()
		if tc.wantErr == "Testfile:2" {
			d.Next()
		}
		var got RedisConfig
		err := got.UnmarshalAddresses(d)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.input, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.input, err)
			continue
		}
		if strings.Join(got.Addresses, " ") != strings.Join(tc.want.Addresses, " ") || got.Cluster != tc.want.Cluster || got.SentinelMaster != tc.want.SentinelMaster {
			t.Errorf("%q: got %+v, want %+v", tc.input, got, tc.want)
		}
	}
}

func TestRedisConfigTargetReplacesPlaceholders(t *testing.T) {
	t.Setenv("RAMPART_TEST_REDIS_PASSWORD", "s3cret")
	target := RedisConfig{Addresses: []string{"redis://:{env.RAMPART_TEST_REDIS_PASSWORD}@127.0.0.1:6379"}}.target(0)
	if target.URLs[0] != "redis://:s3cret@127.0.0.1:6379" {
		t.Fatalf("placeholder not replaced: %q", target.URLs[0])
	}
	if strings.Contains(target.String(), "s3cret") {
		t.Fatalf("password in %q", target.String())
	}
}
