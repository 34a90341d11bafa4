package pipeline

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/console"
)

// TestConsoleLagIsTheStageBehind: while the windows cannot finish a batch
// (ALERTS is gone, so its alert cannot be published), the console shows
// the backlog on the windows' row, fused or not. Fused, the rule filter's
// events stay unacked until the windows' checkpoint: counting EVENTS as
// the filter's lag put the windows' backlog on the filter's row and left
// the windows' at 0.
func TestConsoleLagIsTheStageBehind(t *testing.T) {
	for _, fused := range []bool{false, true} {
		t.Run(fmt.Sprint("fused=", fused), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, _ := startWithoutAlerts(ctx, t, fused)
			for i := range 5 {
				send(t, "tcp", p.tcp, octet(sshFail(t0.Add(time.Duration(i)*time.Second), "198.51.100.78", i)))
			}
			waitFor(t, "the filter to evaluate the events", func() bool { return p.counter("outpost_filter_events_total") >= 5 })
			var stages map[string]console.Stage
			waitFor(t, "the windows' backlog on the console", func() bool {
				stages = map[string]console.Stage{}
				for _, st := range p.buildSnapshot(ctx).Pipeline.Stages {
					stages[st.Name] = st
				}
				return stages["windows"].Lag > 0
			})
			if lag := stages["filter"].Lag; lag != 0 {
				t.Errorf("the filter's lag is %v with every event evaluated, want 0 (stages %+v)", lag, stages)
			}
		})
	}
}
