package bus

import "context"

// Gate holds writers back while the disk is low (state.DiskGuard). Two
// levels: new input (the Publisher, PublishEvents) waits first; the
// consumers, which turn what is already in the streams into smaller state
// and free work-queue space as they ack, wait only at the second.
type Gate interface {
	IngestHeld() bool  // new input must wait
	ProcessHeld() bool // every writer must wait
	// Changed returns a channel closed at the next change of either.
	Changed() <-chan struct{}
}

// SetGate makes the bus's writers wait on g. Call it before Run of any
// stage.
func (b *Bus) SetGate(g Gate) { b.gate = g }

// waitGate returns once held() is false, or with ctx's error.
func (b *Bus) waitGate(ctx context.Context, held func(Gate) bool) error {
	g := b.gate
	if g == nil {
		return nil
	}
	for {
		ch := g.Changed()
		if !held(g) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *Bus) waitIngest(ctx context.Context) error {
	return b.waitGate(ctx, Gate.IngestHeld)
}

func (b *Bus) waitProcess(ctx context.Context) error {
	return b.waitGate(ctx, Gate.ProcessHeld)
}

// processHeld reports whether consumers must pause now.
func (b *Bus) processHeld() bool { return b.gate != nil && b.gate.ProcessHeld() }
