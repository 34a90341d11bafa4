package engine

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// BenchmarkEngine runs the shipped pack over a mix of events — SSH logon
// failures and successes, inbound NSG flows, Entra sign-ins — spread over
// `keys` distinct source addresses: every rule's condition on every event,
// and the window logic on every match, with the states in memory. It is the
// rule engine's CPU cost without the bus and Badger. One op is one event.
func BenchmarkEngine(b *testing.B) {
	set, err := rules.Pack()
	if err != nil {
		b.Fatal(err)
	}
	for _, keys := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			ips := make([]string, keys)
			for i := range ips {
				ips[i] = fmt.Sprintf("203.%d.%d.%d", i>>16&255, i>>8&255, i&255)
			}
			evs := make([]event.Event, 4096)
			base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
			for i := range evs {
				ip := ""
				e := event.Event{ID: fmt.Sprint(i), Source: "syslog", Host: "web-01", App: "sshd", Category: "authentication", Action: "logon", Outcome: "failure", User: fmt.Sprint("u", i%7), SrcIP: ip}
				switch i % 4 {
				case 1:
					e.Outcome = "success"
				case 2:
					e = event.Event{ID: fmt.Sprint(i), Source: "azure.nsgflow", Action: "flow", Outcome: "failure", SrcIP: ip, DstIP: "10.0.0.4", DstPort: 1 + i%1024, Protocol: "tcp", Attrs: map[string]string{"direction": "inbound"}}
				case 3:
					e = event.Event{ID: fmt.Sprint(i), Source: "azure.signin", Category: "authentication", Action: "logon", Outcome: "failure", User: fmt.Sprint("user", i%50, "@contoso.example"), SrcIP: ip, Attrs: map[string]string{"country": "DE"}}
				}
				evs[i] = e
			}
			type key struct{ rule, key string }
			states := make(map[key]*State, keys)
			var v vm.VM
			var hits []rules.Hit
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				ev := &evs[n%len(evs)]
				ev.Time = base.Add(time.Duration(n) * time.Millisecond)
				ev.ID = strconv.Itoa(n)
				ev.SrcIP = ips[n%keys]
				for _, r := range set.Rules {
					hits, _, _ = r.Evaluate(&v, ev, hits[:0])
					for _, h := range hits {
						if Stateless(r) {
							continue
						}
						k := key{r.ID, h.Key}
						st := states[k]
						if st == nil {
							st = &State{}
							states[k] = st
						}
						Apply(r, st, &event.Match{RuleID: r.ID, Key: h.Key, Time: ev.Time, EventID: ev.ID, Step: h.Step, Value: h.Value}, time.Minute)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(len(states)), "live-keys")
		})
	}
}

// BenchmarkApplySequence applies in-order failures (and a success every
// 50th) of brute-force-then-success to 1,000 keys: each state fills up to
// its 80 events, where forgetOldIDs walks every one of them per match. One
// op is one match.
func BenchmarkApplySequence(b *testing.B) {
	set, err := rules.Pack()
	if err != nil {
		b.Fatal(err)
	}
	r := set.Rule("brute-force-then-success")
	if r == nil {
		b.Fatal("no brute-force-then-success in the pack")
	}
	const keys = 1000
	states := make([]State, keys)
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprintf("%026d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		step := 0
		if n%50 == 49 {
			step = 1
		}
		m := event.Match{RuleID: r.ID, Key: "k", Time: base.Add(time.Duration(n) * time.Millisecond), EventID: ids[n%len(ids)], Step: step}
		Apply(r, &states[n%keys], &m, time.Minute)
	}
}
