package forwarder

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFiltersPerDestination(t *testing.T) {
	h := newHarness(t)
	all := listenStream(t, "127.0.0.1:0", nil)
	high := listenStream(t, "127.0.0.1:0", nil)
	tagged := listenStream(t, "127.0.0.1:0", nil)
	h.start(testConfig(t,
		Destination{Name: "all", Address: all.addr()},
		Destination{Name: "high", Address: high.addr(), MinSeverity: 8},
		Destination{Name: "tagged", Address: tagged.addr(), Tags: []string{"T1078", "T1021"}},
	))
	alerts := testAlerts(6)
	alerts[1].Severity, alerts[3].Severity = 9, 8
	alerts[2].Tags, alerts[3].Tags = []string{"T1078"}, []string{"x", "T1021"}
	h.publish(alerts...)
	waitFor(t, 20*time.Second, "every destination", func() bool {
		return all.count() >= 6 && high.count() >= 2 && tagged.count() >= 2
	})
	time.Sleep(200 * time.Millisecond)
	ids := func(r *streamReceiver) map[string]bool {
		out := map[string]bool{}
		for _, m := range r.messages() {
			out[externalIDRe.FindStringSubmatch(m)[1]] = true
		}
		return out
	}
	if got := ids(high); len(got) != 2 || !got["a00001"] || !got["a00003"] {
		t.Errorf("min_severity 8 got %v", got)
	}
	if got := ids(tagged); len(got) != 2 || !got["a00002"] || !got["a00003"] {
		t.Errorf("tags got %v", got)
	}
}

// TestSentIDsSuppressReplay replays the whole stream to a destination (as
// after a crash between delivery and ack) and checks nothing is sent twice.
func TestSentIDsSuppressReplay(t *testing.T) {
	h := newHarness(t)
	r := listenStream(t, "127.0.0.1:0", nil)
	cfg := testConfig(t, Destination{Address: r.addr()})
	_, _, stop := h.start(cfg)
	h.publish(testAlerts(50)...)
	waitFor(t, 20*time.Second, "50 alerts", func() bool { return r.count() >= 50 })
	stop()
	// Forget the consumer's position: every alert is delivered again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.bus.JetStream().DeleteConsumer(ctx, "ALERTS", "outpost-forwarder-siem"); err != nil {
		t.Fatal(err)
	}
	_, reg, _ := h.start(cfg)
	h.publish(testAlerts(60)[50:]...)
	waitFor(t, 20*time.Second, "the 10 new alerts", func() bool { return r.count() >= 60 })
	waitFor(t, 20*time.Second, "50 suppressed", func() bool {
		return testutil.ToFloat64(mustCollector(t, reg, "outpost_forwarder_suppressed_alerts_total")) == 50
	})
	if d := checkAll(t, r.messages(), 60); d != 0 {
		t.Errorf("%d alerts sent twice after the replay", d)
	}
}

// TestFailover: the primary is down, so after failover_after its alerts go
// to the fallback; when it is back, new alerts go to it again.
func TestFailover(t *testing.T) {
	h := newHarness(t)
	primaryAddr := reservedAddr(t)
	backup := listenStream(t, "127.0.0.1:0", nil)
	cfg := testConfig(t,
		Destination{Name: "primary", Address: primaryAddr, Fallback: "backup", FailoverAfter: 300 * time.Millisecond},
		Destination{Name: "backup", Address: backup.addr(), MinSeverity: 10}, // its own filter passes nothing here
	)
	_, reg, _ := h.start(cfg)
	alerts := testAlerts(40)
	h.publish(alerts[:20]...)
	waitFor(t, 20*time.Second, "20 alerts on the fallback", func() bool { return backup.count() >= 20 })
	checkAll(t, backup.messages(), 20)
	// The counter moves after the write returned, which can be a moment
	// after the receiver has read the bytes.
	waitFor(t, 5*time.Second, "20 failover alerts counted", func() bool {
		return testutil.ToFloat64(mustCollector(t, reg, "outpost_forwarder_failover_alerts_total")) == 20
	})
	primary := listenStream(t, primaryAddr, nil)
	// The primary is retried every backoff_max (200ms here).
	time.Sleep(500 * time.Millisecond)
	h.publish(alerts[20:]...)
	waitFor(t, 20*time.Second, "the rest on the primary", func() bool {
		return distinctIDs(append(primary.messages(), backup.messages()...)) >= 40
	})
	if primary.count() == 0 {
		t.Error("nothing went back to the primary")
	}
	checkAll(t, append(primary.messages(), backup.messages()...), 40)
}

func TestRateLimitDelaysNeverDrops(t *testing.T) {
	h := newHarness(t)
	r := listenStream(t, "127.0.0.1:0", nil)
	h.start(testConfig(t, Destination{Address: r.addr(), RateLimit: RateLimit{AlertsPerSecond: 20}}))
	start := time.Now()
	h.publish(testAlerts(40)...)
	waitFor(t, 20*time.Second, "40 alerts", func() bool { return r.count() >= 40 })
	// Burst of 20, then 20/s: about 1s for 40.
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("40 alerts at 20/s took only %s", el)
	}
	checkAll(t, r.messages(), 40)
}
