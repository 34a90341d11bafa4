package forwarder

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// firstArrivals returns the externalIds of msgs in the order each first
// arrived.
func firstArrivals(msgs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range msgs {
		id := externalIDRe.FindStringSubmatch(m)
		if id == nil || seen[id[1]] {
			continue
		}
		seen[id[1]] = true
		out = append(out, id[1])
	}
	return out
}

// TestOrderAfterCrash: a forwarder holds a batch it could not deliver (the
// receiver is down) and dies without acking or nak'ing it (JetStream and
// Badger are closed under it). A new forwarder on the same JetStream and
// Badger dirs, with newer alerts published meanwhile, must deliver in
// stream order, from the first unacked alert on, and soon: not after
// AckWait, behind the newer alerts.
func TestOrderAfterCrash(t *testing.T) {
	dir := t.TempDir()
	h := openHarness(t, dir)
	addr := reservedAddr(t)
	cfg := testConfig(t, Destination{Address: addr})
	const n = 400
	alerts := testAlerts(n)
	h.publish(alerts[:n/2]...)
	_, reg, stop := h.start(cfg)
	waitFor(t, 10*time.Second, "failed dials with alerts in hand", func() bool { return errCount(t, reg, "dial") >= 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.bus.JetStream().Consumer(ctx, bus.StreamAlerts, "outpost-forwarder-siem")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumAckPending == 0 {
		t.Fatalf("the forwarder holds no alerts before the crash: %+v", ci)
	}
	t.Logf("before the crash: %d alerts delivered to the forwarder and not acked", ci.NumAckPending)
	h.crash()
	stop()

	h = openHarness(t, dir)
	r := listenStream(t, addr, nil)
	h.publish(alerts[n/2:]...)
	start := time.Now()
	h.start(cfg)
	deadline := time.Now().Add(8 * time.Second)
	for distinctIDs(r.messages()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := firstArrivals(r.messages())
	t.Logf("after the restart: %d distinct alerts in %s", len(got), time.Since(start).Round(time.Millisecond))
	if len(got) < n {
		first := ""
		if len(got) > 0 {
			first = got[0]
		}
		t.Fatalf("only %d of %d alerts within 8s of the restart; the first to arrive was %s", len(got), n, first)
	}
	for i, id := range got {
		if want := alerts[i].ID; id != want {
			t.Fatalf("arrival %d is %s, want %s (stream order)", i, id, want)
		}
	}
}
