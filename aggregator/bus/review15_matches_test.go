package bus

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Decoded matches keep their record's bytes (DecodeMatchLazy: Fields
// decoded on demand): copies of them kept past DecodeMatches, whose
// fields are decoded only after more compressed MATCHES and EVENTS
// batches were decompressed (into pooled buffers, for EVENTS), still read
// their own fields.
func TestReview15KeptMatchesOutliveLaterBatches(t *testing.T) {
	at := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	batch := func(k int) []byte {
		b := NewBatch()
		for i := range 300 {
			m := &event.Match{RuleID: "brute", Key: fmt.Sprintf("src=198.51.%d.%d", k, i), Time: at, Seen: at, EventID: fmt.Sprintf("b%d-%d", k, i),
				Fields: map[string]string{"src_ip": fmt.Sprintf("198.51.%d.%d", k, i), "user": fmt.Sprintf("admin%d", i%50)}}
			b = AppendRecord(b, event.AppendMatch(nil, m))
		}
		return Compress(b)
	}
	var kept []event.Match
	for k := range 4 {
		data := batch(k)
		if data[0] != batchS2 {
			t.Fatal("not compressed")
		}
		err := DecodeMatches(data, func(m *event.Match) error { kept = append(kept, *m); return nil }, func(_ []byte, err error) error { return err })
		if err != nil {
			t.Fatal(err)
		}
		FreeBatch(data) // what the filter does once acked: reused below
		var evs []byte
		for _, ev := range sshdEvents(300) {
			evs = AppendRecord(evs, event.AppendEvent(nil, ev))
		}
		if err := DecodeEvents(Compress(evs), func(*event.Event) error { return nil }, func(_ []byte, err error) error { return err }); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 { // overwrite whatever the pool hands out
		b := NewBatch()[:batchCap]
		for i := range b {
			b[i] = 0xEE
		}
		FreeBatch(b)
	}
	for j := range kept {
		m := &kept[j]
		k, i := j/300, j%300
		f := m.CarriedFields()
		if want := fmt.Sprintf("198.51.%d.%d", k, i); f["src_ip"] != want || f["user"] != fmt.Sprintf("admin%d", i%50) || m.Key != "src="+want {
			t.Fatalf("match %d: key %q fields %v, want src_ip %s", j, m.Key, f, want)
		}
	}
}
