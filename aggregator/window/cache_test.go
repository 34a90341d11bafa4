package window

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"
)

// windows.cache_size bounds the states kept decoded: past it, the least
// recently used go to the log's memory (changed since the last compaction)
// or are let go (Badger holds them), and a later match reads them back
// unchanged. What the cache counts is what its states take by estimate.
func TestCacheSizeBoundsTheStatesInMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const budget = 16 << 10
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.CacheSize = budget })
	ref := newHarness(ctx, t, thresholdRule, nil) // every state in its cache
	for round := range 3 {
		for i := range 200 {
			m := match("many", fmt.Sprintf("h%03d", i), fmt.Sprintf("r%d-%d", round, i), t0.Add(time.Duration(round*200+i)*time.Millisecond))
			h.commit(ctx, t, m)
			ref.commit(ctx, t, m)
		}
		h.locked(func() {
			sum := int64(0)
			for _, sk := range h.s.cache.Keys() {
				e, _ := h.s.cache.Peek(sk)
				if e.size != entryBytes(sk, &e.st) {
					t.Errorf("%s counted at %d bytes, is %d", sk, e.size, entryBytes(sk, &e.st))
				}
				sum += e.size
			}
			if got := h.s.cacheBytes.Load(); got != sum {
				t.Errorf("the cache counts %d bytes, its states take %d", got, sum)
			}
			if sum > budget || h.s.cache.Len() >= 200 {
				t.Errorf("round %d: %d states, %d bytes in the cache, over its %d", round, h.s.cache.Len(), sum, budget)
			}
		})
	}
	// Every state reads back as the unbounded run has it, before and after
	// a restart.
	if got, want := h.badgerStates(t), ref.badgerStates(t); !maps.Equal(got, want) || len(want) != 200 {
		t.Fatalf("%d states stored with a bounded cache, %d without; they differ: %v", len(got), len(want), !maps.Equal(got, want))
	}
	if ids, want := h.pub.ackedIDs(), ref.pub.ackedIDs(); len(ids) != len(want) || len(want) == 0 {
		t.Fatalf("%d alerts with a bounded cache, %d without", len(ids), len(want))
	}
}
