package forwarder

import "time"

// The bookkeeping of what was written and what is confirmed: which queued
// alerts wait for confirmation on which connection, how a failed or stalled
// link rewinds them, and when an alert counts as delivered (see run in
// deliver.go for the contract).

// unwritten is the index of the first queued alert to be written, or
// len(queue). Everything before d.next is written, done or not to be sent.
func (d *destination) unwritten() int {
	for d.next < len(d.queue) {
		if e := &d.queue[d.next]; e.send && e.on == nil && !e.done {
			break
		}
		d.next++
	}
	return d.next
}

// connRef is a tracker link's connection that alerts wait on.
type connRef struct {
	l    *link
	conn uint64
}

// unconfirm counts e as written on r and not confirmed.
func (d *destination) unconfirm(r connRef) {
	if d.waiting == nil {
		d.waiting = map[connRef]int{}
	}
	d.waiting[r]++
	d.m.unconfirmed.Add(1)
}

// confirm marks e, written on a tracker link, delivered.
func (d *destination) confirm(e *entry) {
	e.done = true
	r := connRef{e.on, e.conn}
	if d.waiting[r]--; d.waiting[r] <= 0 {
		delete(d.waiting, r)
	}
	d.m.unconfirmed.Add(^uint64(0))
}

// rewind marks every alert written and not confirmed as to be written
// again: its connection is gone, and with it what we know of it.
func (d *destination) rewind() {
	if len(d.waiting) == 0 {
		return
	}
	for i := range d.queue {
		if e := &d.queue[i]; e.on != nil && !e.done {
			e.on = nil
		}
	}
	clear(d.waiting)
	d.next = 0
	d.m.unconfirmed.Store(0)
	d.drainFailed = false
}

// lost reports whether alerts wait for confirmation on a connection that
// is closed.
func (d *destination) lost() bool {
	for r := range d.waiting {
		if _, ok := r.l.snd.(tracker).peerAcked(r.conn); !ok {
			return true
		}
	}
	return false
}

// holds reports whether alerts written on l wait for confirmation.
func (d *destination) holds(l *link) bool {
	for r := range d.waiting {
		if r.l == l {
			return true
		}
	}
	return false
}

// watch checks the tracker links: a stalled one is closed (its alerts are
// written again), an idle one with unconfirmed alerts is drained.
func (d *destination) watch() {
	now := time.Now()
	for _, l := range []*link{d.primary, d.fallback} {
		if l == nil {
			continue
		}
		tr, ok := l.snd.(tracker)
		if !ok {
			continue
		}
		if err := tr.checkStall(now); err != nil {
			d.failed(l, err)
			d.rewind()
			continue
		}
		if d.drainFailed || now.Sub(d.lastWrite) < idleDrain || d.unwritten() < len(d.queue) || !d.holds(l) {
			continue
		}
		if conn, written := tr.position(); conn != 0 {
			if acked, _ := tr.peerAcked(conn); acked < written {
				continue // still in flight: not idle yet
			}
		}
		d.drain(l, tr)
	}
}

// drain closes l's connection gracefully; if the receiver shows it read
// everything, the alerts written on it are confirmed.
func (d *destination) drain(l *link, tr tracker) {
	conn, read := tr.drain()
	d.m.connected.Store(d.primary.snd.connected() || (d.fallback != nil && d.fallback.snd.connected()))
	if !read {
		d.drainFailed = true // not again until something new was written
		d.rewind()
		return
	}
	if d.waiting[connRef{l, conn}] > 0 {
		for i := range d.queue {
			if e := &d.queue[i]; e.on == l && e.conn == conn && !e.done {
				d.confirm(e)
			}
		}
	}
	if d.lost() {
		d.rewind()
	}
}

// confirmed reports whether e needs nothing more: not to be sent, or
// delivered as far as its transport can tell. acked caches the peer's
// acknowledged bytes per connection for one settle.
func (d *destination) confirmed(e *entry, acked map[connRef]uint64) bool {
	if !e.send || e.done {
		return true
	}
	if e.on == nil {
		return false
	}
	r := connRef{e.on, e.conn}
	n, ok := acked[r]
	if !ok {
		var open bool
		if n, open = e.on.snd.(tracker).peerAcked(e.conn); !open {
			return false
		}
		acked[r] = n
	}
	if n >= e.end+uint64(e.on.cfg.ResendWindow) {
		d.confirm(e)
		return true
	}
	return false
}
