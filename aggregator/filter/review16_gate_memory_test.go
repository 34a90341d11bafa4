package filter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Review 16: the lateness gate keeps a watermark per (source, host) for
// as long as the rule filter runs (up to engine.MaxHostWatermarks), keyed
// by the strings of the first event of each host. Decoded from EVENTS,
// those are substrings of the event's whole record: each host kept its
// first record alive (a flood of forged host names with long messages:
// 100,000 records, not 100,000 names). Fused and not.
func TestReview16GateKeepsNoRecordAlive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: none, title: T, kind: match, severity: 5, condition: 'host == "nobody"'}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	const hosts, size = 2000, 8 << 10
	at := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < hosts; i += 20 {
		var evs []*event.Event
		for j := i; j < i+20; j++ {
			evs = append(evs, &event.Event{
				ID: fmt.Sprintf("event-%020d", j), Source: "syslog", Host: fmt.Sprint("host-", j),
				Time: at, Received: at, Message: strings.Repeat(fmt.Sprint(j, " "), size/8),
			})
		}
		if err := b.PublishEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, s.Run)
	bustest.WaitDrained(ctx, t, b, "EVENTS")
	stop()
	n := 0
	s.gate.Watermarks(func(string, string, int64) { n++ })
	if n != hosts {
		t.Fatalf("the gate holds %d hosts, want %d", n, hosts)
	}
	held := heapAlloc()
	s.gate = engine.NewGate(s.lateness)
	freed := held - heapAlloc()
	// 2,000 names and watermarks are ~200 KB; their records, 16 MiB.
	if freed > 2<<20 {
		t.Errorf("letting go of the gate's %d hosts freed %d KiB: its keys kept their events' records alive", hosts, freed>>10)
	}
}
