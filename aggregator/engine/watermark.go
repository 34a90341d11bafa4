package engine

import "time"

// Watermark is the event time up to which the engine takes its input as
// complete: the newest event time the Gate admitted (SeenTime, capped at
// reception: Gate.Newest) minus the allowed lateness. Once it has not
// moved for longer than IdleAdvance of the injected clock, it catches up
// with that clock minus the allowed lateness and follows it, so an absence
// rule still fires when every source went silent, and a backlog's
// silences fire IdleAdvance after it was read rather than `for` after its
// last event. It never passes the clock minus the allowed lateness by
// itself: only what an event's reception allows.
//
// The live windows stage does not see the events, only matches: the rule
// filter sends it Gate.Newest as of the start of each batch of events, and
// as of its end on the batch's last message (aggregator/filter), so every
// match the windows apply afterwards comes from an event the gate
// admitted after that.
//
// A Watermark is not safe for concurrent use.
type Watermark struct {
	lateness    time.Duration
	idleAdvance time.Duration // 0: never (rules test, rules replay)
	now         func() time.Time

	maxTime     int64     // newest event time, unix ns; 0 before any
	lastAdvance time.Time // clock time maxTime last grew
}

// NewWatermark returns a watermark held back by lateness. With idleAdvance
// > 0 it follows now once idle that long; now may be nil without it.
func NewWatermark(lateness, idleAdvance time.Duration, now func() time.Time) *Watermark {
	w := &Watermark{lateness: lateness, idleAdvance: idleAdvance, now: now}
	if now != nil {
		w.lastAdvance = now()
	}
	return w
}

// Restore sets the newest event time seen before a restart; idle time
// counts from now.
func (w *Watermark) Restore(maxTime int64) {
	w.maxTime = maxTime
	if w.now != nil {
		w.lastAdvance = w.now()
	}
}

// Observe moves the newest event time on to at (unix ns), if newer.
func (w *Watermark) Observe(at int64) {
	if w.now != nil {
		w.ObserveAt(at, w.now())
	} else {
		w.ObserveAt(at, time.Time{})
	}
}

// ObserveAt is Observe for an event time that arrived at arrived (the
// clock's time then): idle time counts from arrived. The windows stage
// moves its watermark only once a batch is committed, by what arrived
// with it.
func (w *Watermark) ObserveAt(at int64, arrived time.Time) {
	if at > w.maxTime {
		w.maxTime = at
		w.lastAdvance = arrived
	}
}

// Max is the newest event time seen (unix ns), 0 before any.
func (w *Watermark) Max() int64 { return w.maxTime }

// At is the watermark (unix ns); 0 while no match was seen.
func (w *Watermark) At() int64 {
	if w.maxTime == 0 {
		return 0
	}
	wm := w.maxTime - int64(w.lateness)
	if w.idleAdvance > 0 {
		if now := w.now(); now.Sub(w.lastAdvance) > w.idleAdvance {
			wm = max(wm, now.UnixNano()-int64(w.lateness))
		}
	}
	return wm
}

// Advanced is the watermark d past the newest event: where a test's
// `advance` or replay's --advance leaves it at the end of the input.
func (w *Watermark) Advanced(d time.Duration) int64 {
	if w.maxTime == 0 {
		return 0
	}
	return w.maxTime + int64(d) - int64(w.lateness)
}
