package filter

import (
	"hash/fnv"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestSeenTimeIsAtMostTheReception(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if got := (&event.Event{Time: now.AddDate(73, 0, 0), Received: now}).SeenTime(); !got.Equal(now) {
		t.Errorf("seen = %v", got)
	}
	if got := (&event.Event{Time: now.Add(-time.Hour), Received: now}).SeenTime(); !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("seen = %v", got)
	}
	if got := (&event.Event{Time: now.Add(4*time.Minute + 50*time.Second), Received: now}).SeenTime(); !got.Equal(now) {
		t.Errorf("seen = %v, want the reception time", got)
	}
	if got := (&event.Event{Time: now}).SeenTime(); !got.Equal(now) {
		t.Errorf("without a reception time: seen = %v", got)
	}
}

// partition is FNV-1a over rule, 0, key, as hash/fnv computes it.
func TestPartitionIsFNV1a(t *testing.T) {
	for _, c := range []struct{ rule, key string }{{"ssh-brute-force", "src_ip=203.0.113.5"}, {"", ""}, {"r", "k=é"}} {
		h := fnv.New32a()
		h.Write([]byte(c.rule))
		h.Write([]byte{0})
		h.Write([]byte(c.key))
		if got, want := bus.Partition(c.rule, c.key, 16), h.Sum32()%16; got != want {
			t.Errorf("partition(%q, %q) = %d, want %d", c.rule, c.key, got, want)
		}
	}
}
