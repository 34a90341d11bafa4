package bus

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// jsHealth is the embedded JetStream's last health check: "" when
// healthy, else why not.
type jsHealth struct{ problem atomic.Pointer[string] }

// Watch checks the embedded server's JetStream every second until ctx
// ends. A stream that failed a write (the disk filled up) stops answering
// publishes for good, and nats-server disables JetStream on some storage
// errors; neither heals when space comes back. So while JetStream is
// unhealthy Check reports it (for /readyz), and once the gate lets writes
// through again (space was freed) Watch restarts JetStream in place: the
// streams and consumers are read back from disk, the connection stays, and
// the stages' retries carry on. With an external NATS URL it does nothing.
func (b *Bus) Watch(ctx context.Context) error {
	if b.server == nil {
		<-ctx.Done()
		return nil
	}
	every := b.watchEvery
	if every == 0 {
		every = time.Second
	}
	jsCfg := b.server.JetStreamConfig()
	if jsCfg == nil {
		return errors.New("the embedded server runs without JetStream")
	}
	// EnableJetStream appends "jetstream" to the dir it is given.
	jsCfg.StoreDir = filepath.Dir(jsCfg.StoreDir)
	t := time.NewTicker(every)
	defer t.Stop()
	restarted := false // JetStream restarted, its streams not all back yet
	failing := false   // the last attempt failed: log the next failures no more
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		problem := b.jetStreamProblem()
		if problem == "" && restarted {
			problem = "JetStream restarted; its streams are not all back yet"
		}
		b.health.problem.Store(&problem)
		if problem == "" || (b.gate != nil && b.gate.IngestHeld()) {
			continue // healthy, or no room to heal in yet
		}
		if !restarted {
			b.log.Warn("JetStream unhealthy; restarting it", "problem", problem)
			if err := b.restartJetStream(*jsCfg); err != nil {
				if !failing {
					b.log.Error("restarting JetStream failed; will retry", "err", err)
				}
				failing = true
				continue
			}
			restarted = true
		}
		if err := b.ensureStreams(ctx); err != nil {
			if !failing {
				b.log.Error("restoring the streams after a JetStream restart failed; will retry", "err", err)
			}
			failing = true
			continue
		}
		restarted, failing = false, false
		b.log.Info("JetStream restarted and healthy")
		empty := ""
		b.health.problem.Store(&empty)
	}
}

// Check returns why the embedded JetStream cannot take writes, as of the
// last check, or nil.
func (b *Bus) Check() error {
	if p := b.health.problem.Load(); p != nil && *p != "" {
		return errors.New(*p)
	}
	return nil
}

func (b *Bus) jetStreamProblem() string {
	if !b.server.JetStreamEnabled() {
		return "JetStream is disabled"
	}
	h := b.server.Healthz(&server.HealthzOptions{})
	if h.Error != "" && (strings.Contains(h.Error, "write error") || strings.Contains(h.Error, "could not be recovered")) {
		return h.Error
	}
	return ""
}

func (b *Bus) restartJetStream(c server.JetStreamConfig) error {
	if err := b.server.ShutdownJetStream(); err != nil {
		return fmt.Errorf("stopping JetStream: %w", err)
	}
	if err := b.server.EnableJetStream(&c); err != nil {
		return fmt.Errorf("starting JetStream: %w", err)
	}
	return nil
}
