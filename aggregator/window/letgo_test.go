package window

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A checkpoint being written does not hold its states decoded when memory
// holds more than half of cache_keys decoded: once the checkpointer has
// encoded a state it lets go of the decoded one, while the checkpoint
// waits for its alerts' acks. A batch that touches such a
// state gets it as sealed, decoded again, and fires on it as the reference
// does; the others leave memory once the checkpoint is durable (the log
// holds them) and are read back from there. Before, all of them stayed
// decoded until the checkpoint was durable: at 100,000 keys as many
// states as a checkpoint seals, several times their encodings' memory.
func TestSealedStatesAreLetGoOfOnceEncoded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// More than half of cache_keys decoded when the checkpoint seals:
	// with fewer (a few busy keys) the states stay decoded.
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.CacheKeys = 8 })
	ref := newReference(h.s.cfg)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	hosts := []string{"a", "b", "c", "d", "e"}
	var first []*event.Match
	for i, host := range hosts {
		first = append(first, match("many", host, host+"1", at(i)), match("many", host, host+"2", at(10+i)))
	}
	ref.apply(t, h.set, first...)
	third := match("many", "a", "a3", at(20))
	wantIDs := ref.apply(t, h.set, third)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}

	gate := make(chan struct{})
	h.pub.then(step{gate: gate})
	w1 := background(h.mustApply(ctx, t, first...))
	cp := h.sealAsync(ctx, t)
	encoded := func(host string) (in, enc bool) {
		e := h.s.mem[h.sk(t, "many", host)]
		if e == nil {
			return false, false
		}
		return true, e.sealing.Load() == sealDone && e.encoded && e.st.Times == nil && e.st.IDs == nil
	}
	waitFor(ctx, t, "the checkpointer to encode the sealed states", func() bool {
		all := true
		h.locked(func() {
			for _, host := range hosts {
				if _, enc := encoded(host); !enc {
					all = false
				}
			}
		})
		return all
	})
	pending(t, cp, "the checkpoint (its acks held)")

	// a3 completes host=a's window on the sealed state, decoded again.
	wy := background(h.mustApply(ctx, t, third))
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Fatalf("published %v, want %v", ids, wantIDs)
	}
	h.locked(func() {
		if e := h.s.mem[h.sk(t, "many", "a")]; e == nil || e.encoded || !e.dirty || e.st.Spent == 0 {
			t.Fatalf("host=a, touched while sealed: in memory %v, still encoded or not dirty", e != nil)
		}
	})

	close(gate)
	for what, c := range map[string]<-chan error{"the checkpoint": cp, "epoch 1's wait": w1} {
		if err := recv(t, c, what); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	h.locked(func() {
		for _, host := range hosts {
			in, _ := encoded(host)
			if want := host == "a"; in != want {
				t.Errorf("host=%s in memory %v after the checkpoint, want %v", host, in, want)
			}
		}
	})
	h.checkpoint(ctx, t)
	if err := recv(t, wy, "a3's wait"); err != nil {
		t.Fatal(err)
	}
	for _, host := range hosts {
		if got, want := h.stored(t, h.sk(t, "many", host)), ref.state(t, h.set, "many", host); !bytes.Equal(got, want) {
			t.Errorf("host=%s: stored %x, want %x", host, got, want)
		}
	}
	// Read back from the log: a third failure of host=b fires too.
	more := match("many", "b", "b3", at(21))
	want := ref.apply(t, h.set, more)
	h.commit(ctx, t, more)
	if got := h.pub.ackedIDs(); !slices.Equal(got, append(wantIDs, want...)) {
		t.Errorf("acked %v, want %v", got, append(wantIDs, want...))
	}
}

// With few states decoded (a few busy keys: at most half of cache_keys)
// the checkpointer keeps them decoded: the batches that touch them next
// would only decode them again.
func TestFewSealedStatesStayDecoded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	gate := make(chan struct{})
	h.pub.then(step{gate: gate})
	w := background(h.mustApply(ctx, t, match("many", "a", "a1", t0), match("many", "b", "b1", t0)))
	cp := h.sealAsync(ctx, t)
	waitFor(ctx, t, "the checkpointer to encode the sealed states", func() bool {
		done := true
		h.locked(func() {
			for _, host := range []string{"a", "b"} {
				if e := h.s.mem[h.sk(t, "many", host)]; e == nil || e.sealing.Load() != sealDone {
					done = false
				}
			}
		})
		return done
	})
	h.locked(func() {
		for _, host := range []string{"a", "b"} {
			if e := h.s.mem[h.sk(t, "many", host)]; e.encoded || len(e.st.Times) != 1 {
				t.Errorf("host=%s let go of (%v), %d events decoded", host, e.encoded, len(e.st.Times))
			}
		}
	})
	close(gate)
	for what, c := range map[string]<-chan error{"the checkpoint": cp, "the wait": w} {
		if err := recv(t, c, what); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}
