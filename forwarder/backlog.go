package forwarder

import (
	"context"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// monitor measures each destination's backlog every monitorEvery and
// watches the ALERTS stream's limits.
//
// Overflow policy: ALERTS is a limits stream with DiscardOld
// (nats.streams.alerts.max_bytes, max_age). While a destination is down,
// its backlog grows in the stream; when the stream reaches max_bytes (or an
// alert reaches max_age) the oldest alerts are deleted whether or not every
// destination got them. Ingest and correlation never stop for a dead link.
// The forwarder reports it: outpost_forwarder_alerts_stream_full goes to 1
// (and a warning is logged) at 95% of max_bytes, and alerts deleted before a
// destination's consumer acknowledged them are counted in
// outpost_forwarder_backlog_overflow_alerts_total{destination} and logged
// as an error.
func (f *Forwarder) monitor(ctx context.Context) {
	t := time.NewTicker(f.monitorEvery)
	defer t.Stop()
	full := false
	lost := make([]uint64, len(f.dests))
	for {
		f.measure(ctx, &full, lost)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Forwarder) measure(ctx context.Context, full *bool, lost []uint64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	js := f.bus.JetStream()
	st, err := js.Stream(ctx, bus.StreamAlerts)
	if err != nil {
		return
	}
	si := st.CachedInfo()
	nowFull := si.Config.MaxBytes > 0 && float64(si.State.Bytes) >= 0.95*float64(si.Config.MaxBytes)
	if nowFull != *full {
		*full = nowFull
		if nowFull {
			f.streamFull.Set(1)
			f.log.Warn("ALERTS stream is at its max_bytes: the oldest alerts are being dropped, delivered or not",
				"bytes", si.State.Bytes, "max_bytes", si.Config.MaxBytes)
		} else {
			f.streamFull.Set(0)
		}
	}
	for i, d := range f.dests {
		c, err := st.Consumer(ctx, d.consumer())
		if err != nil {
			continue
		}
		ci := c.CachedInfo()
		d.m.backlog.Store(ci.NumPending + uint64(ci.NumAckPending))
		// Everything below FirstSeq is gone; what of it this consumer had
		// not acked was dropped before delivery.
		if si.State.FirstSeq > ci.AckFloor.Stream+1 {
			gone := si.State.FirstSeq - 1 - ci.AckFloor.Stream
			if gone > lost[i] {
				d.m.overflow.Add(gone - lost[i])
				f.log.Error("ALERTS reached its limit: alerts were dropped before this destination got them",
					"destination", d.cfg.Name, "dropped", gone-lost[i])
				lost[i] = gone
			}
		} else {
			lost[i] = 0
		}
	}
}
