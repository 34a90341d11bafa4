package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// seriesValue is the value of the series of name whose labels include
// every pair of want.
func seriesValue(g prometheus.Gatherer, name string, want map[string]string) float64 {
	mfs, _ := g.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestDeadLettersCounted sends one bad thing to each stage that
// dead-letters: a syslog frame over the size limit, an undecodable EVENTS
// batch (the rule filter) and an undecodable MATCHES batch (the windows).
// Each must be counted as published to DEADLETTER and as a dead letter of
// its stage.
func TestDeadLettersCounted(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "127.0.0.1:9")
	r := start(t, cfg)
	js := r.bus.JetStream()
	junk := []byte{0xB1, 0x7f, 'x'} // a binary batch cut short
	for _, subj := range []string{"events.syslog", "matches.0"} {
		if _, err := js.Publish(context.Background(), subj, junk); err != nil {
			t.Fatal(err)
		}
	}
	send(t, "tcp", r.tcp, strings.Repeat("x", int(cfg.Ingest.Syslog.MaxMessageSize)+10)+"\n")

	waitFor(t, "three messages in DEADLETTER", func() bool {
		st, err := js.Stream(context.Background(), "DEADLETTER")
		return err == nil && st.CachedInfo().State.Msgs == 3
	})
	// Each stage counts once the stream has acked, just after the store.
	waitFor(t, "three dead letters published", func() bool {
		return seriesValue(r.reg, "outpost_bus_published_messages_total", map[string]string{"stream": "DEADLETTER"}) == 3
	})
	for _, want := range []map[string]string{
		{"stage": "syslog", "reason": "oversize"},
		{"stage": "filter", "reason": "undecodable"},
		{"stage": "windows", "reason": "undecodable"},
	} {
		waitFor(t, fmt.Sprintf("outpost_dead_letters_total%v = 1", want), func() bool {
			return seriesValue(r.reg, "outpost_dead_letters_total", want) == 1
		})
	}
}
