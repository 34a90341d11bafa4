package window

import (
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// BenchmarkStage applies the shipped pack's matches of failed SSH logons
// from `keys` source addresses (ssh-brute-force, password-spray,
// brute-force-then-success: three states per address) to the windows
// stage as its consumer would — batches of 512 matches, up to inFlight of
// them unacked — with the real store: an embedded JetStream for the
// state log and the alerts, a Badger dir, checkpoints every
// checkpoint_interval. It is the stateful stage's cost without ingest,
// the rule filter and MATCHES. One op is one match.
func BenchmarkStage(b *testing.B) {
	set, err := rules.Pack()
	if err != nil {
		b.Fatal(err)
	}
	for _, keys := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			ctx := b.Context()
			cfg := Config{}
			if err := cfg.Validate(); err != nil {
				b.Fatal(err)
			}
			bs, db := bustest.Open(ctx, b), statetest.Open(b)
			s, err := New(cfg, bs, db, set, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(startCheckpointer(ctx, b, s))
			const batch = 512
			var settles []func() error
			gen := matchGen{set: set, keys: keys}
			var genCPU time.Duration
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for lo := 0; lo < b.N; lo += batch {
				// Made batch by batch: b.N matches made first would be a
				// heap of hundreds of MiB for the collector to mark. Their
				// making is in ns/op, not in cpu-ns/op.
				c := cpuTime(b)
				ms := gen.next(b, min(batch, b.N-lo))
				genCPU += cpuTime(b) - c
				settle, err := applyBatchAt(ctx, s, uint64(lo/batch+1), ms) // one MATCHES message, at its position
				if err != nil {
					b.Fatal(err)
				}
				settles = append(settles, settle)
				if len(settles) > inFlight {
					s.requestCheckpoint()
					if err := settles[0](); err != nil {
						b.Fatal(err)
					}
					settles = settles[1:]
				}
			}
			if err := s.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
			for _, settle := range settles {
				if err := settle(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
			// In the pipeline the stage shares two cores with ingest and
			// the rule filter: what it costs is its CPU, the checkpointer's
			// included, not the time it took here with a core to spare.
			b.ReportMetric(float64(cpuTime(b)-cpu0-genCPU)/float64(b.N), "cpu-ns/op")
			// A restart: a new stage reads the state log back.
			s2, err := New(cfg, bs, db, set, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := s2.open(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(time.Since(start).Seconds(), "restart-s")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// matchGen makes the pack's matches of failed SSH logons, one every
// millisecond, from addresses taken in turn from keys of them.
type matchGen struct {
	set  *rules.Set
	keys int
	eval engine.Evaluator
	i    int
	left []*event.Match // of the last event
}

// next returns the next n matches.
func (g *matchGen) next(b *testing.B, n int) []*event.Match {
	out := make([]*event.Match, 0, n)
	for len(out) < n {
		if len(g.left) == 0 {
			g.event(b)
			continue
		}
		out = append(out, g.left[0])
		g.left = g.left[1:]
	}
	return out
}

func (g *matchGen) event(b *testing.B) {
	i := g.i
	g.i++
	at := t0.Add(time.Duration(i) * time.Millisecond)
	k := i % g.keys
	ev := &event.Event{
		ID: nuid.Next(), Time: at, Received: at, Source: "syslog", Host: "web-01", App: "sshd",
		Category: "authentication", Action: "logon", Outcome: "failure",
		User: fmt.Sprint("u", i%7), SrcIP: fmt.Sprintf("203.%d.%d.%d", k>>16&255, k>>8&255, k&255),
	}
	err := g.eval.Evaluate(g.set.Rules, ev, func(r *rules.Rule, m *event.Match) error {
		if !engine.Stateless(r) {
			c := *m
			g.left = append(g.left, &c)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
