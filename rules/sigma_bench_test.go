package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/sigma/gen"
)

// BenchmarkSigmaFilter is the rule filter alone (engine.Evaluator over
// Set.For, as the filter stage runs it) on a mix of syslog sshd lines and
// Entra sign-in, audit and Activity Log events: the shipped pack, then the
// pack plus n synthetic Sigma rules (rules/sigma/gen, every modifier). One
// op is one event; events/s is per core (the benchmark is one goroutine).
func BenchmarkSigmaFilter(b *testing.B) {
	evs := make([]event.Event, 1024)
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range evs {
		ip := fmt.Sprintf("203.0.%d.%d", i>>8&255, i&255)
		var e event.Event
		switch i % 4 {
		case 0, 1:
			e = event.Event{Source: "syslog", Host: "web-01", App: "sshd", Category: "authentication", Action: "logon", Outcome: "failure",
				User: fmt.Sprint("u", i%7), SrcIP: ip, Message: fmt.Sprintf("Failed password for u%d from %s port %d ssh2", i%7, ip, 40000+i)}
		case 2:
			e = event.Event{Source: "azure.signin", Category: "authentication", Action: "logon", Outcome: "failure", App: "Azure Portal",
				User: fmt.Sprint("user", i%50, "@contoso.example"), SrcIP: ip, Message: "Invalid username or password or Invalid on-premise username or password.",
				Attrs: map[string]string{"result_type": "50126", "country": "DE", "user_agent": "Mozilla/5.0", "client_app": "Browser"}}
		case 3:
			e = event.Event{Source: "azure.activity", Category: "administrative", Action: "microsoft.compute/virtualmachines/write",
				MsgID: "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", User: "ops@contoso.example", SrcIP: ip, Message: "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
				Attrs: map[string]string{"resource_id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1", "azure_category": "Administrative"}}
		}
		e.ID = fmt.Sprint(i)
		e.Time = base.Add(time.Duration(i) * time.Second)
		evs[i] = e
	}
	for _, n := range []int{0, 500} {
		b.Run(fmt.Sprintf("sigma=%d", n), func(b *testing.B) {
			o := rules.SigmaOptions{}
			if n > 0 {
				dir := b.TempDir()
				if err := gen.Write(dir, n); err != nil {
					b.Fatal(err)
				}
				o.Dirs = []string{dir}
			}
			set, err := rules.Load("", o)
			if err != nil {
				b.Fatal(err)
			}
			if len(set.Rejected) > 0 {
				b.Fatalf("rejected: %v", set.Rejected[0])
			}
			var e engine.Evaluator
			matches := 0
			emit := func(*rules.Rule, *event.Match) error { matches++; return nil }
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ev := &evs[i%len(evs)]
				i++
				if err := e.Evaluate(set.Candidates(ev, &e.Scratch), ev, emit); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(matches)/float64(b.N), "matches/event")
			b.ReportMetric(float64(len(set.Rules)), "rules")
		})
	}
}
