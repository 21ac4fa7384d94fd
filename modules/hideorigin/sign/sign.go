// Package sign is the engine of origin_lock: the edge's request signature
// (an HMAC over the request and the client it came from), its strict
// parser, the verifier and the bounded replay cache. It imports no Caddy
// package.
package sign

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Header is the request header that carries the edge's signature.
const Header = "Rampart-Edge-Signature"

// MinKeyLen is the shortest accepted signing key, in bytes.
const MinKeyLen = 16

// maxSignatureLen bounds the header the verifier is willing to parse.
const maxSignatureLen = 512

const nonceLen = 16

// Key is an HMAC-SHA256 signing key with its key id. The id is derived from
// the key itself, so edge and origin agree on it without configuration and a
// rotated key is recognised by its id.
type Key struct {
	ID     string
	secret []byte
}

// NewKey checks and wraps a secret.
func NewKey(secret string) (Key, error) {
	if len(secret) < MinKeyLen {
		return Key{}, fmt.Errorf("key is %d bytes long, at least %d are required", len(secret), MinKeyLen)
	}
	sum := sha256.Sum256([]byte("rampart-edge-key-id\x00" + secret))
	return Key{ID: hex.EncodeToString(sum[:4]), secret: []byte(secret)}, nil
}

// Signed is what a signature covers.
type Signed struct {
	Method   string
	Host     string
	URI      string // path and query as the origin receives them
	ClientIP netip.Addr
	Time     time.Time
	Nonce    [nonceLen]byte
}

// Signature is a parsed signature header.
type Signature struct {
	Version  int
	KeyID    string
	Time     int64
	Nonce    [nonceLen]byte
	ClientIP netip.Addr
	MAC      [sha256.Size]byte
}

func mac(secret []byte, method, host, uri string, ip netip.Addr, ts int64, nonce []byte) [sha256.Size]byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("rampart-edge-signature-v1\n"))
	h.Write([]byte(method))
	h.Write([]byte{'\n'})
	h.Write([]byte(strings.ToLower(host)))
	h.Write([]byte{'\n'})
	h.Write([]byte(uri))
	h.Write([]byte{'\n'})
	h.Write([]byte(ip.String()))
	h.Write([]byte{'\n'})
	h.Write([]byte(strconv.FormatInt(ts, 10)))
	h.Write([]byte{'\n'})
	h.Write(nonce)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// Sign returns the header value for s. A zero nonce is replaced by a random
// one.
func (k Key) Sign(s Signed) string {
	if s.Nonce == ([nonceLen]byte{}) {
		_, _ = rand.Read(s.Nonce[:])
	}
	ip := s.ClientIP.Unmap()
	ts := s.Time.Unix()
	sum := mac(k.secret, s.Method, s.Host, s.URI, ip, ts, s.Nonce[:])
	enc := base64.RawURLEncoding
	var b strings.Builder
	b.Grow(160)
	b.WriteString("v=1;kid=")
	b.WriteString(k.ID)
	b.WriteString(";ts=")
	b.WriteString(strconv.FormatInt(ts, 10))
	b.WriteString(";nonce=")
	b.WriteString(enc.EncodeToString(s.Nonce[:]))
	b.WriteString(";ip=")
	b.WriteString(ip.String())
	b.WriteString(";sig=")
	b.WriteString(enc.EncodeToString(sum[:]))
	return b.String()
}

// Parse parses a signature header strictly: every field exactly
// once, nothing else.
func Parse(v string) (Signature, error) {
	var sig Signature
	if len(v) > maxSignatureLen {
		return sig, errors.New("signature header too long")
	}
	seen := map[string]bool{}
	enc := base64.RawURLEncoding
	for _, field := range strings.Split(v, ";") {
		name, val, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok || val == "" {
			return sig, fmt.Errorf("malformed field %q", field)
		}
		if seen[name] {
			return sig, fmt.Errorf("duplicate field %q", name)
		}
		seen[name] = true
		switch name {
		case "v":
			if val != "1" {
				return sig, fmt.Errorf("unsupported version %q", val)
			}
			sig.Version = 1
		case "kid":
			if len(val) != 8 {
				return sig, fmt.Errorf("malformed key id %q", val)
			}
			if _, err := hex.DecodeString(val); err != nil {
				return sig, fmt.Errorf("malformed key id %q", val)
			}
			sig.KeyID = val
		case "ts":
			ts, err := strconv.ParseInt(val, 10, 64)
			if err != nil || ts < 0 {
				return sig, fmt.Errorf("malformed timestamp %q", val)
			}
			sig.Time = ts
		case "nonce":
			if enc.DecodedLen(len(val)) != nonceLen {
				return sig, errors.New("malformed nonce")
			}
			if _, err := enc.Decode(sig.Nonce[:], []byte(val)); err != nil {
				return sig, errors.New("malformed nonce")
			}
		case "ip":
			ip, err := netip.ParseAddr(val)
			if err != nil || ip.Zone() != "" {
				return sig, fmt.Errorf("malformed client ip %q", val)
			}
			sig.ClientIP = ip
		case "sig":
			if enc.DecodedLen(len(val)) != sha256.Size {
				return sig, errors.New("malformed mac")
			}
			if _, err := enc.Decode(sig.MAC[:], []byte(val)); err != nil {
				return sig, errors.New("malformed mac")
			}
		default:
			return sig, fmt.Errorf("unknown field %q", name)
		}
	}
	for _, f := range []string{"v", "kid", "ts", "nonce", "ip", "sig"} {
		if !seen[f] {
			return sig, fmt.Errorf("missing field %q", f)
		}
	}
	return sig, nil
}

// Verification failures; each is one value of the origin lock's result
// metric.
var (
	ErrMissing      = errors.New("no signature")
	ErrMalformed    = errors.New("malformed signature")
	ErrUnknownKey   = errors.New("unknown key id")
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("signature timestamp outside the allowed skew")
	ErrReplay       = errors.New("signature replayed")
	ErrCacheFull    = errors.New("replay cache full")
)

// Verifier checks signatures against a set of keys (the current one and
// previous ones during a rotation), a maximum clock skew and a replay cache.
type Verifier struct {
	keys    map[string]Key
	skew    time.Duration
	replays *ReplayCache
	// Now is the clock (tests may set it).
	Now func() time.Time
}

// NewVerifier builds a verifier. The replay cache must remember nonces for
// at least 2*skew.
func NewVerifier(keys []Key, skew time.Duration, replays *ReplayCache) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	if skew <= 0 {
		return nil, errors.New("max skew must be positive")
	}
	v := &Verifier{keys: map[string]Key{}, skew: skew, replays: replays, Now: time.Now}
	for _, k := range keys {
		if other, ok := v.keys[k.ID]; ok && string(other.secret) != string(k.secret) {
			return nil, fmt.Errorf("two keys share the key id %s", k.ID)
		}
		v.keys[k.ID] = k
	}
	return v, nil
}

// Verify checks the header value for a request; on success it returns the
// parsed signature (its ClientIP is the client the edge saw).
func (v *Verifier) Verify(header, method, host, uri string) (Signature, error) {
	if header == "" {
		return Signature{}, ErrMissing
	}
	sig, err := Parse(header)
	if err != nil {
		return sig, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	k, ok := v.keys[sig.KeyID]
	if !ok {
		return sig, fmt.Errorf("%w %s", ErrUnknownKey, sig.KeyID)
	}
	want := mac(k.secret, method, host, uri, sig.ClientIP, sig.Time, sig.Nonce[:])
	if !hmac.Equal(want[:], sig.MAC[:]) {
		return sig, ErrBadSignature
	}
	now := v.Now()
	d := now.Sub(time.Unix(sig.Time, 0))
	if d > v.skew || d < -v.skew {
		return sig, fmt.Errorf("%w (%s)", ErrStale, d.Round(time.Second))
	}
	if v.replays != nil {
		if err := v.replays.Add(sig.Nonce, now); err != nil {
			return sig, err
		}
	}
	return sig, nil
}
