package forwarder

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// entry is one alert taken from ALERTS and not yet acked there.
type entry struct {
	msg   jetstream.Msg
	size  int          // len(msg.Data()): what the queue's byte bound counts
	send  bool         // false: nothing to send (filtered, dead-lettered, already sent)
	id    string       // the alert's id
	alert *event.Alert // decoded; dropped once written, decoded again for a resend

	// out is the syslog message, rendered for outFor; it is dropped once
	// written (a resend renders it again) and outLen kept for the metrics.
	out    []byte
	outFor *link
	outLen int

	// Where it was written. on is nil while it is (again) to be written.
	// For a tracker link, conn and end say on which connection and up to
	// which byte; on other links written means delivered (done).
	on      *link
	conn    uint64
	end     uint64
	done    bool
	written bool // written at least once: a later write is a resend
}

// Queue bounds. A destination holds at most 2×fetchBatch alerts fetched
// and not yet written (so a receiver that is down costs no memory: its
// backlog stays on disk in ALERTS), and at most maxQueue alerts, or
// maxQueueBytes (of their JSON) plus twice its resend_window, un-acked in
// JetStream in all, most of them written and not yet confirmed.
const (
	maxQueue      = 50_000
	maxQueueBytes = 16 << 20
	fetchBatch    = 128
	// idleDrain is how long a tracker link may be idle, with alerts
	// written on it and not confirmed, before it is closed gracefully to
	// confirm them (see tracker.drain).
	idleDrain = 500 * time.Millisecond
	// inProgressEvery keeps the held alerts ours (AckWait is a minute).
	inProgressEvery = 20 * time.Second
)

// run consumes the destination's durable consumer until ctx ends.
//
// Delivery loop. Alerts are fetched into an in-memory queue (bounded, see
// maxQueue) in stream order, written in that order, and acked in JetStream
// only once confirmed, from the head of the queue, after their ids were
// recorded in Badger. Confirmed means: relp answered 200; udp, the kernel
// took the datagram; tcp and tls, the peer's TCP acknowledged the alert and
// resend_window bytes after it (the receive buffers of a proxy or relay,
// or of the receiver itself, hold what it acknowledged and did not read),
// or the receiver answered a graceful close with its own (it read all).
//
// When a connection fails, is closed by the peer, or stalls (its
// unacknowledged bytes do not shrink for write_timeout), every alert
// written and not confirmed is written again, in order, before anything
// newer: those the receiver did get arrive twice, with the same
// externalId. A crash loses nothing either: what was not confirmed was not
// acked, and resume hands it out first on the next start.
func (d *destination) run(ctx context.Context) error {
	defer func() {
		d.primary.snd.close()
		if d.fallback != nil {
			d.fallback.snd.close()
		}
		d.m.connected.Store(false)
	}()
	batch := fetchBatch
	if d.alertsRL != nil {
		batch = max(1, min(batch, int(d.cfg.RateLimit.AlertsPerSecond)))
	}
	if err := d.resume(ctx); err != nil {
		return err
	}
	cons, err := d.bus.JetStream().CreateOrUpdateConsumer(ctx, bus.StreamAlerts, jetstream.ConsumerConfig{
		Durable:       d.consumer(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxAckPending: maxQueue + fetchBatch,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("creating consumer %s: %w", d.consumer(), err)
	}
	d.backoff = bus.Backoff{Min: 100 * time.Millisecond, Max: d.cfg.BackoffMax}
	lastInProgress := time.Now()
	fetchFailures := 0
	for ctx.Err() == nil {
		if err := d.fetch(ctx, cons, batch); err != nil {
			if ctx.Err() != nil {
				break
			}
			d.log.Warn("fetching from consumer failed", "consumer", d.consumer(), "err", err)
			_ = d.backoff.Sleep(ctx, fetchFailures)
			fetchFailures++
			continue
		}
		fetchFailures = 0
		if err := d.write(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		d.watch()
		if err := d.settle(ctx); err != nil {
			return err
		}
		if time.Since(lastInProgress) >= inProgressEvery {
			for _, e := range d.queue {
				_ = e.msg.InProgress()
			}
			lastInProgress = time.Now()
		}
	}
	d.stop()
	return nil
}

// fetch adds what ALERTS has to the queue, as room allows. With nothing to
// write it waits for the next alert, briefly, and less while alerts wait
// for confirmation, so their link is watched.
func (d *destination) fetch(ctx context.Context, cons jetstream.Consumer, batch int) error {
	toWrite := len(d.queue) - d.unwritten()
	if toWrite >= 2*fetchBatch {
		return nil // enough in hand: a receiver that is down keeps the backlog on disk
	}
	if len(d.queue) >= maxQueue || d.queueBytes >= maxQueueBytes+2*int(d.cfg.ResendWindow) {
		if toWrite == 0 {
			time.Sleep(50 * time.Millisecond) // full of unconfirmed alerts: wait for the receiver
		}
		return nil
	}
	msgs, err := fetchMsgs(cons.FetchNoWait(batch))
	if err != nil || len(msgs) > 0 || toWrite > 0 {
		return d.admit(ctx, msgs, err)
	}
	wait := 500 * time.Millisecond
	if len(d.queue) > 0 {
		wait = 100 * time.Millisecond
	}
	msgs, err = fetchMsgs(cons.Fetch(1, jetstream.FetchMaxWait(wait)))
	return d.admit(ctx, msgs, err)
}

func fetchMsgs(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	// A batch that ended early (b.Error) is not a failure: what it
	// brought is queued, and a lasting problem fails the next Fetch.
	return msgs, nil
}

// admit decodes, filters and suppresses msgs and queues them.
func (d *destination) admit(ctx context.Context, msgs []jetstream.Msg, ferr error) error {
	if len(msgs) == 0 {
		return ferr
	}
	var ids []string
	var idx []int
	for _, m := range msgs {
		if md, err := m.Metadata(); err == nil {
			if md.Sequence.Stream <= d.lastSeq {
				continue // redelivered while we hold it (AckWait ran out): it is queued already
			}
			d.lastSeq = md.Sequence.Stream
		}
		e := entry{msg: m, size: len(m.Data())}
		a := new(event.Alert)
		switch err := json.Unmarshal(m.Data(), a); {
		case err != nil:
			reason := err.Error()
			if err := d.retry(ctx, func() error { return d.bus.DeadLetter(ctx, "forwarder", reason, m.Data(), "") }); err != nil {
				return err
			}
		case !d.pass(a):
			d.m.filtered.Add(1)
		default:
			e.alert, e.send, e.id = a, true, a.ID
			ids = append(ids, a.ID)
			idx = append(idx, len(d.queue))
		}
		d.queue = append(d.queue, e)
		d.queueBytes += e.size
	}
	if len(ids) > 0 {
		var seen []bool
		if err := d.retry(ctx, func() (err error) { seen, err = d.sent.seen(ids); return err }); err != nil {
			return err
		}
		for i, s := range seen {
			if s {
				d.queue[idx[i]].send = false
				d.m.suppressed.Add(1)
			}
		}
	}
	if md, err := msgs[len(msgs)-1].Metadata(); err == nil {
		d.m.backlog.Store(md.NumPending + uint64(len(d.queue)))
	}
	return ferr
}

// retry runs f until it succeeds or ctx ends: a fetched alert is never
// dropped from the queue (JetStream would hand it out again only after
// AckWait, out of order).
func (d *destination) retry(ctx context.Context, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		if attempt%10 == 0 {
			d.log.Warn("forwarder cannot proceed; retrying", "err", err)
		}
		if err := d.backoff.Sleep(ctx, attempt); err != nil {
			return err
		}
	}
}

// write sends the next chunk of queued alerts (up to fetchBatch) over the
// link pick chooses, retrying with backoff on failure.
func (d *destination) write(ctx context.Context) error {
	for _, l := range []*link{d.primary, d.fallback} {
		if l == nil {
			continue
		}
		if tr, ok := l.snd.(tracker); ok {
			tr.healthy() // a receiver that closed: lost rewinds what was on it
		}
	}
	if d.lost() {
		d.rewind()
	}
	first := d.unwritten()
	if first == len(d.queue) {
		return nil
	}
	l := d.pick()
	var chunk [][]byte
	var at []int
	for i := first; i < len(d.queue) && len(chunk) < fetchBatch; i++ {
		e := &d.queue[i]
		if !e.send || e.done || e.on != nil {
			continue
		}
		if e.alert == nil {
			e.alert = new(event.Alert)
			if err := json.Unmarshal(e.msg.Data(), e.alert); err != nil {
				return fmt.Errorf("decoding alert %s again: %w", e.id, err) // it decoded once
			}
		}
		if e.outFor != l {
			var cut bool
			e.out, cut = l.fmt.appendMessage(e.out[:0], e.alert, time.Now())
			e.outFor = l
			if cut {
				d.m.oversize.Add(1)
			}
		}
		chunk = append(chunk, e.out)
		at = append(at, i)
	}
	if d.alertsRL != nil || d.bytesRL != nil {
		chunk, at = chunk[:1], at[:1]
		if err := d.wait(ctx, len(chunk[0])); err != nil {
			return err
		}
	}
	n, err := l.snd.send(ctx, chunk)
	d.m.connected.Store(l.snd.connected())
	tr, tracked := l.snd.(tracker)
	var conn, end uint64
	if tracked {
		conn, end = tr.position()
	}
	for k := range n {
		e := &d.queue[at[k]]
		if e.written {
			d.m.resent.Add(1)
		} else {
			d.drainFailed = false
		}
		e.written = true
		e.outLen, e.out, e.outFor, e.alert = len(e.out), nil, nil, nil
		if tracked {
			e.on, e.conn, e.end = l, conn, end
			d.unconfirm(connRef{l, conn})
		} else {
			e.done = true
			e.on = l
		}
	}
	if n > 0 {
		d.lastWrite = time.Now()
		if l == d.primary {
			d.recovered(l) // progress: a primary that delivers part of a batch is not down
		}
		d.attempt = 0
	}
	if err == nil {
		d.recovered(l)
		return nil
	}
	d.failed(l, err)
	if d.lost() {
		d.rewind()
	}
	if err := d.backoff.Sleep(ctx, d.attempt); err != nil {
		return err
	}
	d.attempt++
	return nil
}

// settle acks the confirmed head of the queue, after recording the ids of
// the alerts in it that were sent.
func (d *destination) settle(ctx context.Context) error {
	k := 0
	acked := map[connRef]uint64{}
	for k < len(d.queue) && d.confirmed(&d.queue[k], acked) {
		k++
	}
	if k == 0 {
		return nil
	}
	var ids []string
	var alerts, bytes int
	for _, e := range d.queue[:k] {
		if !e.send {
			continue
		}
		ids = append(ids, e.id)
		alerts++
		bytes += e.outLen
		if e.on != d.primary {
			d.m.failover.Add(1)
		}
	}
	if len(ids) > 0 {
		if err := d.sent.record(ids); err != nil {
			return err
		}
	}
	d.m.alerts.Add(uint64(alerts))
	d.m.bytes.Add(uint64(bytes))
	for _, e := range d.queue[:k] {
		if err := e.msg.Ack(); err != nil && ctx.Err() == nil {
			d.log.Warn("ack failed; the alert will be sent again after a restart", "err", err)
		}
		d.queueBytes -= e.size
	}
	clear(d.queue[:k])
	d.queue = d.queue[k:]
	d.next = max(0, d.next-k)
	if len(d.queue) == 0 {
		d.queue = d.queue[:0:0] // let the backing array go
	}
	return nil
}

// stop ends the destination: tracker links are drained, so what the
// receiver read is confirmed and acked; the rest stays un-acked and goes
// first on the next start.
func (d *destination) stop() {
	for _, l := range []*link{d.primary, d.fallback} {
		if l == nil {
			continue
		}
		if tr, ok := l.snd.(tracker); ok && d.holds(l) {
			d.drain(l, tr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.settle(ctx)
}
