package window

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// The encodings the stage keeps (the state log's index, cold) take the
// memory their budgets count. A state encoding was allocated for its
// event ids whole, which front-coding makes a fraction of that: in a
// ten-minute run at 100,000 addresses the log's index held 368 MB of
// heap for encodings a fifth that size.
func TestKeptEncodingsAreTheirSize(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, `
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 1000, window: 1h}`,
		func(c *Config) { c.CacheKeys, c.CheckpointKeys, c.ColdBytes = 2, 2, 1<<20 })
	ids := nuid.New()
	var ms []*event.Match
	for i := range 80 {
		for _, host := range []string{"a", "b", "c", "d"} {
			ms = append(ms, match("many", host, ids.Next(), t0.Add(time.Duration(i)*7*time.Second)))
		}
	}
	h.commit(ctx, t, ms...)
	h.locked(func() {
		if len(h.s.logged) != 4 {
			t.Fatalf("the log's index holds %d states, want 4", len(h.s.logged))
		}
		check := func(where, sk string, enc []byte) {
			if cap(enc) != len(enc) {
				t.Errorf("%s: %s's encoding is %d bytes in %d", where, sk, len(enc), cap(enc))
			}
		}
		for sk, ls := range h.s.logged {
			check("logged", sk, ls.enc)
		}
		// Let every state go: those beyond cache_keys go to cold.
		for sk := range h.s.mem {
			if e := h.s.mem[sk]; e != nil {
				h.s.freeze(sk, e)
			}
		}
		if len(h.s.cold) == 0 {
			t.Fatal("nothing in cold")
		}
		for sk, c := range h.s.cold {
			check("cold", sk, c.enc)
		}
	})
}
