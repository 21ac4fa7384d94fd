package table

import "testing"

// TestMergeKeepsLocalWritesAndSumsGauges: a value set locally since the last
// collect survives a merge of the older cluster value; gauges read local +
// remote, and CollectDeltas reports the local share only.
func TestMergeKeepsLocalWritesAndSumsGauges(t *testing.T) {
	s := mustSchema(t, "ip", "req_cur", "gpt(1)", "ban")
	s.Replicated = true
	tb, _ := newTable(t, s, 10, 0)
	k := key(t, tb, "192.0.2.7")
	r, _ := tb.Acquire(k, Events{Req: true})
	tb.Set(r, col(t, tb, "gpt0"), 5)
	if err := tb.Merge(k, []Remote{{col(t, tb, "gpt0"), 1}, {col(t, tb, "req_cur"), 4}}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, tb, k, "gpt0"); v != 5 {
		t.Errorf("gpt0 = %d after merging an older cluster value, want the local 5", v)
	}
	if v := get(t, tb, k, "req_cur"); v != 5 {
		t.Errorf("req_cur = %d, want local 1 + remote 4", v)
	}
	var got []Delta
	tb.CollectDeltas(func(d Delta) { got = append(got, d) })
	// columns: req_cur gpt0 ban
	if len(got) != 1 || !got[0].Set || got[0].Values[0] != 1 || got[0].Values[1] != 5 {
		t.Fatalf("deltas %+v, want one with Set, req_cur 1 (local), gpt0 5", got)
	}
	// Collected: now the cluster's value wins, and the request's end is news.
	if err := tb.Merge(k, []Remote{{col(t, tb, "gpt0"), 8}}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, tb, k, "gpt0"); v != 8 {
		t.Errorf("gpt0 = %d, want the cluster's 8", v)
	}
	tb.Release(r, Events{ReqEnd: true})
	got = nil
	tb.CollectDeltas(func(d Delta) { got = append(got, d) })
	if len(got) != 1 || got[0].Set || got[0].Values[0] != 0 {
		t.Fatalf("deltas %+v, want the gauge back to 0 and no value set", got)
	}
}

func TestKeyBytesRoundTrip(t *testing.T) {
	for _, typ := range []string{"ip", "integer", "string"} {
		s := mustSchema(t, typ, "gpc(1)")
		k, err := s.KeyFrom("10")
		if typ == "ip" {
			k, err = s.KeyFrom("2001:db8::1")
		}
		if err != nil {
			t.Fatal(err)
		}
		back, ok := s.KeyFromBytes(k.Bytes(s))
		if !ok || back != k {
			t.Errorf("%s: key %v came back as %v %v", typ, k, back, ok)
		}
	}
}

// TestEntryOwnShare: a replicated entry reports this node's own counts,
// rates and gauges next to the cluster-wide values, whether the counts
// came from local events or from a strict acquire the cluster counted.
func TestEntryOwnShare(t *testing.T) {
	s := mustSchema(t, "ip", "http_req_cnt", "http_req_rate(10s)", "req_cur", "ban")
	s.Replicated = true
	tb, _ := newTable(t, s, 10, 0)
	k := key(t, tb, "192.0.2.8")
	for range 3 {
		r, _ := tb.Acquire(k, Events{Req: true})
		tb.Release(r, Events{ReqEnd: true})
	}
	tb.CollectDeltas(func(Delta) {})
	remote := []Remote{{col(t, tb, "http_req_cnt"), 10}, {col(t, tb, "http_req_rate"), 10}, {col(t, tb, "req_cur"), 2}}
	if err := tb.Merge(k, remote); err != nil {
		t.Fatal(err)
	}
	remote[0].Value, remote[1].Value = 11, 11
	r, view, err := tb.AcquireMerged(k, Events{Req: true}, remote)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Release(r, Events{ReqEnd: true})
	e, _ := tb.Snapshot(k)
	// columns: http_req_cnt http_req_rate req_cur ban
	if e.Values[0] != 11 || e.Values[1] != 11 || e.Values[2] != 3 || view[0] != 11 {
		t.Errorf("cluster values %v (view %v), want cnt 11, rate 11, req_cur 2 + 1", e.Values, view)
	}
	if e.Own[0] != 4 || e.Own[1] != 4 || e.Own[2] != 1 || !e.OwnOK[2] || e.OwnOK[3] {
		t.Errorf("own %v %v, want cnt 4, rate 4, req_cur 1, no ban", e.Own, e.OwnOK)
	}
}
