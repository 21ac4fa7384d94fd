package table

import "hash/fnv"

// UpstreamServerID is the server_id that `lb_policy stick` stores for an upstream:
// the FNV-1a hash of its dial address, never 0 (0 is "no server"). The stats
// module's drain with keep_sticky compares it too.
func UpstreamServerID(dial string) uint64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(dial))
	if id := uint64(h.Sum32()); id != 0 {
		return id
	}
	return 1
}
