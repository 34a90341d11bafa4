package forwarder

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// TestBacklogDuringOutage: with the receiver down, the backlog gauge
// follows the alerts arriving in ALERTS within a couple of seconds (at the
// forwarder's own measuring interval, not the tests'), and the forwarder
// keeps the backlog on disk: it holds no more than a few batches.
func TestBacklogDuringOutage(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig(t, Destination{Address: reservedAddr(t)})
	f, err := New(cfg, "test", h.bus, h.db, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapInuse
	h.publish(testAlerts(200)...)
	waitFor(t, 5*time.Second, "a backlog of 200", func() bool { return f.Status()[0].Backlog == 200 })
	const n = 5000
	h.publish(testAlerts(n)[200:]...)
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for f.Status()[0].Backlog != n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lag := time.Since(start)
	t.Logf("backlog %d of %d, %s after the last publish", f.Status()[0].Backlog, n, lag.Round(time.Millisecond))
	if lag > 3*time.Second {
		t.Errorf("backlog gauge lagged %s behind ALERTS", lag.Round(time.Millisecond))
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer qcancel()
	c, err := h.bus.JetStream().Consumer(qctx, bus.StreamAlerts, "outpost-forwarder-siem")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(qctx)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("held by the forwarder (un-acked): %d of %d; heap %+.1f MiB", ci.NumAckPending, n, (float64(ms.HeapInuse)-float64(heap0))/(1<<20))
	if ci.NumAckPending > 3*fetchBatch {
		t.Errorf("the forwarder holds %d alerts for a receiver that is down; want at most %d", ci.NumAckPending, 3*fetchBatch)
	}
}
