package filter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// keepingSink keeps what the windows keep of a match in a state (its
// event id, a distinct rule's value) and hands the batch back, as the
// windows stage does.
type keepingSink struct {
	mu   sync.Mutex
	kept []string
}

func (k *keepingSink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig { return cc }

func (k *keepingSink) Apply(_ context.Context, ms []event.Match, _ []bus.Source, _ int64, _ int) (func() error, error) {
	k.mu.Lock()
	for _, m := range ms {
		k.kept = append(k.kept, m.EventID, m.Value)
	}
	k.mu.Unlock()
	engine.ReleaseMatches(ms)
	return func() error { return nil }, nil
}

// Fused, the windows keep the event ids (and values) of the matches the
// filter hands them for as long as the windows last. Decoded events'
// strings are substrings of their record: kept as they are, one 26-byte id
// kept the whole record (here 8 KiB) alive.
func TestFusedMatchesDoNotKeepTheirEventsAlive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: hosts, title: T, kind: distinct, severity: 5, condition: 'user != ""', group_by: [user], field: host, threshold: 1000000, window: 1h}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	const events, size = 2000, 8 << 10
	at := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < events; i += 20 {
		var evs []*event.Event
		for j := i; j < i+20; j++ {
			evs = append(evs, &event.Event{
				ID: fmt.Sprintf("event-%020d", j), Source: "syslog", Host: fmt.Sprint("host-", j), User: "root",
				Time: at, Received: at, Message: strings.Repeat(fmt.Sprint(j, " "), size/8),
			})
		}
		if err := b.PublishEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	sink := &keepingSink{}
	if late := drainFused(ctx, t, b, set, slog.New(slog.NewTextHandler(io.Discard, nil)), sink); late > 0 {
		t.Fatalf("%d events late", late)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.kept) != 2*events {
		t.Fatalf("the sink kept %d strings, want %d", len(sink.kept), 2*events)
	}
	held := heapAlloc()
	sink.kept = nil
	freed := held - heapAlloc()
	// The strings themselves are ~70 KB and their slice ~130 KB; the
	// records, 2,000 of 8 KiB, would be 16 MiB.
	if freed > 2<<20 {
		t.Errorf("letting go of the %d ids and values kept freed %d KiB: they kept their events' records alive", 2*events, freed>>10)
	}
}

func heapAlloc() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
