package wire

import (
	"errors"
	"fmt"
	"io"
)

// ReadHeader reads one PROXY header from r into h without losing any byte
// that follows it: what was read past the header is returned as rest, and
// must be delivered before further reads from r. buf is scratch space whose
// capacity is reused (nil is fine). maxLen limits the header length.
//
// When r does not begin with a PROXY header, the error wraps ErrNotProxy and
// rest holds the bytes read so far. When r ends inside a header the error
// wraps ErrTruncated; an r that ends before any byte returns io.EOF. Other
// read errors (such as a deadline) are returned as they are.
func ReadHeader(r io.Reader, buf []byte, maxLen int, h *Header) (rest []byte, err error) {
	buf = buf[:0]
	if cap(buf) < 256 {
		buf = make([]byte, 0, 256)
	}
	for {
		n, perr := Parse(buf, h, maxLen)
		switch {
		case perr == nil:
			return buf[n:], nil
		case errors.Is(perr, ErrNotProxy):
			return buf, perr
		case !errors.Is(perr, ErrIncomplete):
			return nil, perr
		}
		want := cap(buf)
		if len(buf) >= v2HeaderLen && buf[0] == signatureV2[0] && buf[1] == signatureV2[1] {
			// a v2 header announces its length: make room for all of it
			want = announcedLength(buf) + v2HeaderLen
		}
		if len(buf) == cap(buf) || want > cap(buf) {
			grown := make([]byte, len(buf), max(2*cap(buf), want))
			copy(grown, buf)
			buf = grown
		}
		m, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if rerr != nil && m == 0 {
			if errors.Is(rerr, io.EOF) {
				if len(buf) == 0 {
					return nil, io.EOF
				}
				return nil, fmt.Errorf("%w after %d bytes", ErrTruncated, len(buf))
			}
			return nil, rerr
		}
	}
}

// announcedLength returns the length field of a v2 header prefix.
func announcedLength(b []byte) int {
	return int(b[14])<<8 | int(b[15])
}
