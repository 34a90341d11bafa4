package rules

import (
	"testing"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// BenchmarkEvaluate measures one event against every rule of the shipped
// pack: the rule filter's per-event cost.
func BenchmarkEvaluate(b *testing.B) {
	set, err := Pack()
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		ev   event.Event
	}{
		{"ssh-failure-matches", event.Event{Source: "syslog", Time: time.Now(), App: "sshd", Category: "authentication", Action: "logon", Outcome: "failure", User: "root", SrcIP: "203.0.113.5"}},
		{"nginx-no-match", event.Event{Source: "syslog", Time: time.Now(), App: "nginx", Message: `10.0.0.1 - - "GET / HTTP/1.1" 200 512`}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var v vm.VM
			var hits []Hit
			b.ReportAllocs()
			for b.Loop() {
				for _, r := range set.Rules {
					var err error
					if hits, _, err = r.Evaluate(&v, &c.ev, hits[:0]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
