package engine

import (
	"encoding/binary"
	"errors"
)

// Hello is what passthrough needs from a TLS ClientHello.
type Hello struct {
	// ServerName is the SNI host name, lower-cased as sent ("" if absent).
	ServerName string
	// ALPN lists the application protocols the client offers, in order.
	ALPN []string
}

// Errors of ParseClientHello.
var (
	// ErrNeedMore means the bytes end before the ClientHello does.
	ErrNeedMore = errors.New("incomplete TLS ClientHello")
	// ErrNotTLS means the bytes do not start a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS ClientHello")
	// ErrMalformed means the ClientHello is truncated inside or invalid.
	ErrMalformed = errors.New("malformed TLS ClientHello")
)

// MaxHelloLength bounds the ClientHello reassembled from records.
const MaxHelloLength = 16 * 1024

const (
	recordHandshake  = 22
	handshakeClient  = 1
	extServerName    = 0
	extALPN          = 16
	sniHostNameEntry = 0
)

// ParseClientHello reads the ClientHello at the start of b, which holds the
// first bytes a client sent: one or more TLS handshake records. It returns
// ErrNeedMore when b ends early (read more and call again), ErrNotTLS when b
// is not a TLS handshake and ErrMalformed for a broken ClientHello.
func ParseClientHello(b []byte) (Hello, error) {
	// the usual case: one record holds the whole ClientHello, parsed in place
	if len(b) >= 9 && b[0] == recordHandshake && b[1] == 3 && b[5] == handshakeClient {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		need := 4 + (int(b[6])<<16 | int(b[7])<<8 | int(b[8]))
		if n >= need && len(b) >= 5+need && need <= MaxHelloLength {
			return parseHelloBody(b[9 : 5+need])
		}
	}
	var msg []byte
	need := -1 // handshake message length once known
	for {
		if need >= 0 && len(msg) >= need {
			break
		}
		if len(b) < 5 {
			if len(b) > 0 && b[0] != recordHandshake {
				return Hello{}, ErrNotTLS
			}
			return Hello{}, ErrNeedMore
		}
		if b[0] != recordHandshake || b[1] != 3 {
			return Hello{}, ErrNotTLS
		}
		n := int(binary.BigEndian.Uint16(b[3:5]))
		if n == 0 || n > 1<<14+2048 {
			return Hello{}, ErrMalformed
		}
		if len(b) < 5+n {
			return Hello{}, ErrNeedMore
		}
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
		if need < 0 && len(msg) >= 4 {
			if msg[0] != handshakeClient {
				return Hello{}, ErrNotTLS
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > MaxHelloLength {
				return Hello{}, ErrMalformed
			}
		}
	}
	return parseHelloBody(msg[4:need])
}

// reader is a bounds-checked cursor over a byte slice.
type reader struct {
	b  []byte
	ok bool
}

// skip moves the cursor n bytes on (past the end marks the reader failed).
func (r *reader) skip(n int) {
	if !r.ok || n > len(r.b) {
		r.ok = false
		return
	}
	r.b = r.b[n:]
}

// u8 reads one byte.
func (r *reader) u8() int {
	if !r.ok || len(r.b) < 1 {
		r.ok = false
		return 0
	}
	v := int(r.b[0])
	r.b = r.b[1:]
	return v
}

// u16 reads a big-endian 16-bit number.
func (r *reader) u16() int {
	if !r.ok || len(r.b) < 2 {
		r.ok = false
		return 0
	}
	v := int(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

// bytes reads the next n bytes (nil when fewer are left).
func (r *reader) bytes(n int) []byte {
	if !r.ok || n > len(r.b) {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// parseHelloBody reads the server name and ALPN list of a ClientHello
// handshake body.
func parseHelloBody(body []byte) (Hello, error) {
	r := reader{b: body, ok: true}
	r.skip(2 + 32)  // legacy_version, random
	r.skip(r.u8())  // session id
	r.skip(r.u16()) // cipher suites
	r.skip(r.u8())  // compression methods
	if !r.ok {
		return Hello{}, ErrMalformed
	}
	var h Hello
	if len(r.b) == 0 {
		return h, nil // no extensions
	}
	exts := reader{b: r.bytes(r.u16()), ok: r.ok}
	if !r.ok {
		return Hello{}, ErrMalformed
	}
	for len(exts.b) > 0 && exts.ok {
		typ := exts.u16()
		data := reader{b: exts.bytes(exts.u16()), ok: true}
		if !exts.ok {
			break
		}
		switch typ {
		case extServerName:
			list := reader{b: data.bytes(data.u16()), ok: data.ok}
			for len(list.b) > 0 && list.ok {
				kind := list.u8()
				name := list.bytes(list.u16())
				if list.ok && kind == sniHostNameEntry && h.ServerName == "" {
					h.ServerName = lowerASCII(name)
				}
			}
			if !list.ok {
				return Hello{}, ErrMalformed
			}
		case extALPN:
			list := reader{b: data.bytes(data.u16()), ok: data.ok}
			for len(list.b) > 0 && list.ok {
				p := list.bytes(list.u8())
				if list.ok && len(p) > 0 {
					h.ALPN = append(h.ALPN, string(p))
				}
			}
			if !list.ok {
				return Hello{}, ErrMalformed
			}
		}
	}
	if !exts.ok {
		return Hello{}, ErrMalformed
	}
	return h, nil
}

// lowerASCII returns b as a string with ASCII letters lower-cased.
func lowerASCII(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out)
}
