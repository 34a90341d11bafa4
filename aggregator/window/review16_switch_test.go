package window

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// Review 16: windows.fused now defaults to true with the embedded server,
// so an appliance upgraded after a crash of the unfused version switches
// mode with EVENTS messages unacked whose matches are in MATCHES (applied
// or not). The rule filter evaluates those messages again and hands their
// matches fused: the two modes kept their EVENTS positions apart (one
// account per partition, one fused), so those matches were applied a
// second time. For every probe case (a rule kind for which applying a
// match twice is not a no-op), the alerts and states must be those of a
// run that saw each match once, whichever order the fused batch and the
// MATCHES messages left come in.
func TestReview16SwitchToFusedAfterACrash(t *testing.T) {
	for name, c := range probeCases() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ref := newProbeRun(t, c.rule)
			s, stop := ref.stage(ctx, nil)
			applyFusedAll(ctx, t, s, c.batches)
			settleAll(ctx, t, s)
			stop()
			first := min(5, len(c.batches)) // the first checkpoint's (pad)

			// Unfused: the first checkpoint's matches (pad: the first five
			// EVENTS messages') applied and checkpointed, the filter killed
			// before it acked their events; fused after the restart: the
			// filter hands them again, then the rest.
			t.Run("applied unfused, then handed fused", func(t *testing.T) {
				run := newProbeRun(t, c.rule)
				js := run.bus.JetStream()
				cons := matchesConsumer(ctx, t, js)
				s, stop := run.stage(ctx, nil)
				handleAll(ctx, t, s, publishPartitioned(ctx, t, js, cons, c.batches[:first], s.bus.Partitions()))
				stop()
				s2, stop2 := run.stage(ctx, nil)
				applyFusedAll(ctx, t, s2, c.batches)
				settleAll(ctx, t, s2)
				stop2()
				if n := testutil.ToFloat64(s2.republished); int(n) != matchCount(c.batches[:first]) {
					t.Errorf("%v of %d matches applied unfused and handed fused recognised", n, matchCount(c.batches[:first]))
				}
				sameAsSingleRun(t, run, ref)
			})
			// Unfused: the first five EVENTS messages' matches published,
			// not yet applied, when the process was killed; fused after the
			// restart: the filter hands them again with the rest, and
			// MATCHES hands its messages too.
			t.Run("handed fused, then left in MATCHES", func(t *testing.T) {
				run := newProbeRun(t, c.rule)
				js := run.bus.JetStream()
				cons := matchesConsumer(ctx, t, js)
				left := publishPartitioned(ctx, t, js, cons, c.batches[:first], run.bus.Partitions())
				s, stop := run.stage(ctx, nil)
				applyFusedAll(ctx, t, s, c.batches)
				settleAll(ctx, t, s)
				handleAll(ctx, t, s, left)
				stop()
				if n := testutil.ToFloat64(s.republished); int(n) != matchCount(c.batches[:first]) {
					t.Errorf("%v of %d matches left in MATCHES, handed fused first, recognised", n, matchCount(c.batches[:first]))
				}
				sameAsSingleRun(t, run, ref)
			})
		})
	}
}

// publishPartitioned publishes each non-empty batch as the unfused rule
// filter does for the EVENTS message at sequence i+1: one MATCHES message
// per partition its matches hash to (rule, group key), with the EVENTS
// position it comes from, and fetches them through cons.
func publishPartitioned(ctx context.Context, t *testing.T, js jetstream.JetStream, cons jetstream.Consumer, batches [][]*event.Match, parts int) []jetstream.Msg {
	t.Helper()
	n := 0
	for i, batch := range batches {
		byPart := map[uint32][]*event.Match{}
		var order []uint32
		for _, m := range batch {
			p := bus.Partition(m.RuleID, m.Key, uint32(parts))
			if byPart[p] == nil {
				order = append(order, p)
			}
			byPart[p] = append(byPart[p], m)
		}
		for _, p := range order {
			msg := nats.NewMsg("matches." + strconv.Itoa(int(p)))
			for _, m := range byPart[p] {
				msg.Data = bus.AppendRecord(msg.Data, event.AppendMatch(nil, m))
			}
			pos, _ := bus.SourcePosition(uint64(i+1), 0)
			msg.Header.Set(bus.HeaderSource, strconv.FormatUint(pos, 10)+" 0:"+strconv.Itoa(len(byPart[p])))
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return fetchFrom(t, cons, n)
}
