package main

import (
	"fmt"
	"math"
	"time"
)

// burstEvery is how often a paced run writes the lines that fell due.
const burstEvery = 10 * time.Millisecond

// pacer sends at a fixed wall-clock rate: at every multiple of burstEvery
// after the dial, the lines due by then (pace × elapsed) are generated and
// written, so the sender needs memory for one burst, not for the run. A
// receiver that cannot keep up blocks the writes (TCP back-pressure); the
// pacer then falls behind its schedule and catches up without waiting,
// until the deadline. Event time is separate: line i still carries
// start + i/rate, so -rate 1000 -pace 30000 packs 30 s of event time into
// each wall second; -rate equal to -pace makes the two clocks agree.
type pacer struct {
	pace     float64       // lines per wall-clock second
	limit    int           // lines: stop after this many
	duration time.Duration // wall clock: stop after this long, 0: no limit
	octet    bool          // RFC 6587 octet counting, else LF
	timeout  time.Duration // the whole send, from the dial
}

// planned is how long sending all limit lines on schedule takes.
func (p pacer) planned() time.Duration {
	d := time.Duration(float64(p.limit) / p.pace * float64(time.Second))
	if p.duration > 0 {
		d = min(d, p.duration)
	}
	return d
}

// due is when, after the first burst's schedule began, line n-1 was due.
func (p pacer) due(n int) time.Duration {
	return time.Duration(float64(n) / p.pace * float64(time.Second))
}

// paceReport is what a paced run did.
type paceReport struct {
	pace      float64
	lines     int
	bytes     int64
	began     time.Time     // the dial
	seconds   float64       // from the connection to the last write
	maxBehind time.Duration // the longest a written line waited past its due time
}

// String is the report line, in the form of the other modes' with the pace
// and max_behind_s added (one burst, ~0.01 s, when keeping up), and
// behind=P% when the last line went out later than its due time by more
// than 1% of the run: the receiver held the sender back, or -duration cut
// it short. One burst of lateness is the schedule's own and not counted.
func (r paceReport) String() string {
	s := fmt.Sprintf("loadgen: lines=%d bytes=%d seconds=%.3f lines_per_s=%.0f began=%.6f pace=%.0f max_behind_s=%.3f",
		r.lines, r.bytes, r.seconds, float64(r.lines)/r.seconds, float64(r.began.UnixNano())/1e9, r.pace, r.maxBehind.Seconds())
	late := r.seconds - float64(r.lines)/r.pace - burstEvery.Seconds()
	if short := late / r.seconds; short > 0.01 {
		s += fmt.Sprintf(" behind=%.1f%%", 100*short)
	}
	return s
}

// send dials addr (127.0.0.1 only) and sends g's lines on schedule. The
// report is valid, for the lines written, also when err is not nil.
func (p pacer) send(addr string, g *generator) (paceReport, error) {
	r := paceReport{pace: p.pace}
	conn, began, err := dial(addr, p.timeout)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	r.began = began
	start := time.Now()
	buf := make([]byte, 0, 64<<10)
	msg := make([]byte, 0, 512)
	const chunk = 256 // lines per write when catching up, so a late burst is not one huge buffer
	for k := 1; r.lines < p.limit; k++ {
		at := time.Duration(k) * burstEvery
		last := p.duration > 0 && at >= p.duration
		if last {
			at = p.duration
		}
		time.Sleep(time.Until(start.Add(at))) // returns at once when behind
		due := min(p.limit, int(math.Floor(p.pace*at.Seconds())))
		for r.lines < due {
			// Past the deadline by more than a burst: the receiver held us
			// back, and what is still due is not sent.
			if p.duration > 0 && time.Since(start) > p.duration+burstEvery {
				last = true
				break
			}
			buf = buf[:0]
			for n := min(due-r.lines, chunk); n > 0; n-- {
				msg = g.line(msg[:0], r.lines)
				buf = frame(buf, msg, p.octet)
				r.lines++
			}
			if _, err := conn.Write(buf); err != nil {
				r.seconds = time.Since(start).Seconds()
				return r, fmt.Errorf("sending to %s: %w", addr, err)
			}
			r.bytes += int64(len(buf))
			r.maxBehind = max(r.maxBehind, time.Since(start)-p.due(r.lines))
		}
		if last {
			break
		}
	}
	r.seconds = time.Since(start).Seconds()
	if err := conn.CloseWrite(); err != nil {
		return r, fmt.Errorf("closing %s: %w", addr, err)
	}
	return r, nil
}
