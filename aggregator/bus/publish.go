package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("publisher closed")

// Publisher takes events from the sources and publishes them to EVENTS:
// whatever is queued goes out as few messages as possible (events of one
// source packed in one binary batch, up to MaxBatchBytes each), published
// asynchronously, with JetStream's acks awaited per round.
//
// Publish only enqueues: it blocks while the queue is full, which is how
// backpressure from JetStream (a full stream, a lost connection) or from a
// low disk (SetGate) reaches the sources. A failed publish is retried with backoff until it succeeds or the
// publisher is stopped; nothing is dropped. Events still queued when the
// process dies are lost; the queue is small (Capacity) for that reason, and
// syslog senders have no acknowledgement to hold them anyway.
type Publisher struct {
	bus   *Bus
	js    jetstream.JetStream
	queue chan item
	done  chan struct{}
	// stopped is closed when Run returns: a Flush still waiting fails.
	stopped chan struct{}
	batch   int
	log     *slog.Logger

	m          *metrics
	events     prometheus.Counter
	tooBig     prometheus.Counter
	maxPayload int
	retries    prometheus.Counter
	queued     prometheus.GaugeFunc
}

// PublisherConfig sizes the publisher; zero values get defaults.
type PublisherConfig struct {
	Capacity int // events queued before Publish blocks; default 8192
	Batch    int // queued items taken per round; default 4096
}

// NewPublisher returns a publisher on b. Run must be running for Publish to
// make progress.
func NewPublisher(b *Bus, cfg PublisherConfig, logger *slog.Logger, reg prometheus.Registerer) (*Publisher, error) {
	if cfg.Capacity <= 0 {
		cfg.Capacity = 8192
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 4096
	}
	p := &Publisher{
		bus:        b,
		js:         b.js,
		queue:      make(chan item, cfg.Capacity),
		done:       make(chan struct{}),
		stopped:    make(chan struct{}),
		batch:      cfg.Batch,
		log:        logger.With("component", "publisher"),
		m:          b.metrics(),
		maxPayload: int(b.nc.MaxPayload()) - 4096, // room for headers
		tooBig: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_bus_oversized_events_total",
			Help: "Events larger than the NATS max payload, dead-lettered instead of published.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_bus_published_events_total",
			Help: "Events acknowledged by JetStream in EVENTS.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_bus_publish_retries_total",
			Help: "Publishes that failed (full stream, lost connection) and were retried.",
		}),
	}
	p.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_bus_publish_queue_events",
		Help: "Events waiting in memory for their JetStream publish.",
	}, func() float64 { return float64(len(p.queue)) })
	for _, c := range []prometheus.Collector{p.events, p.tooBig, p.retries, p.queued} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the publisher's metrics: %w", err)
		}
	}
	return p, nil
}

// Publish queues ev for EVENTS under events.<ev.Source>.
func (p *Publisher) Publish(ctx context.Context, ev *event.Event) error {
	buf := eventBufs.Get().(*[]byte)
	*buf = event.AppendEvent((*buf)[:0], ev)
	data := *buf
	if len(data) > p.maxPayload {
		// It could never be published; keep a sample for a human instead
		// of retrying forever.
		p.tooBig.Inc()
		reason := fmt.Sprintf("oversize: event of %d bytes encoded exceeds the NATS max payload of %d", len(data), p.maxPayload)
		sample, _ := json.Marshal(ev)
		return p.enqueue(ctx, item{msg: deadLetterMsg(ev.Source, reason, sample[:min(len(sample), 64<<10)], ev.Sender), source: ev.Source, reason: reason})
	}
	return p.enqueue(ctx, item{subject: "events." + ev.Source, data: data, buf: buf})
}

// eventBufs recycles the encodings of events waiting in the queue, which
// pack copies into messages: one allocated per event was 6% of the bytes
// the pipeline allocated.
var eventBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

// maxPooledEvent bounds what eventBufs keeps: a rare huge event's buffer
// is left to the collector.
const maxPooledEvent = 4 << 10

// item is one queued thing to publish: an encoded event (batched with its
// neighbours of the same subject) or a whole message (a dead letter, with
// its source and reason for the count).
type item struct {
	subject string
	data    []byte
	// buf, when set, is data's buffer from eventBufs: pack gives it back
	// once it copied data into a message.
	buf            *[]byte
	msg            *nats.Msg
	source, reason string
	// flushed, on a marker queued by Flush, is closed once everything
	// queued before the marker is acked.
	flushed chan struct{}
}

// Flush returns once every event and dead letter queued before the call
// is acked by JetStream, or when ctx ends or the publisher closes first.
// It queues a marker behind them: the queue is published in order, a
// round at a time, so the marker's round being acked covers them all.
func (p *Publisher) Flush(ctx context.Context) error {
	m := item{flushed: make(chan struct{})}
	if err := p.enqueue(ctx, m); err != nil {
		return err
	}
	select {
	case <-m.flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stopped:
		return ErrClosed
	}
}

// DeadLetter queues raw input that could not be parsed for DEADLETTER,
// with the reason and sender in headers.
func (p *Publisher) DeadLetter(ctx context.Context, source, reason string, raw []byte, sender string) error {
	return p.enqueue(ctx, item{msg: deadLetterMsg(source, reason, append([]byte(nil), raw...), sender), source: source, reason: reason})
}

func (p *Publisher) enqueue(ctx context.Context, m item) error {
	select {
	case <-p.done:
		return ErrClosed
	default:
	}
	select {
	case p.queue <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return ErrClosed
	}
}

// Close stops accepting events; Run publishes what is queued and returns.
// Call it after the sources have stopped.
func (p *Publisher) Close() { close(p.done) }

// Run publishes until Close, then drains the queue. If ctx ends first, Run
// returns with whatever is still queued unpublished.
func (p *Publisher) Run(ctx context.Context) error {
	defer close(p.stopped)
	items := make([]item, 0, p.batch)
	for {
		items = items[:0]
		select {
		case it := <-p.queue:
			items = append(items, it)
		case <-p.done:
			return p.drain(ctx, items)
		case <-ctx.Done():
			return nil
		}
		items = p.fill(items)
		// While the disk is low, hold the items: the queue fills and
		// Publish blocks, which is the sources' back-pressure.
		if err := p.bus.waitIngest(ctx); err != nil {
			return nil
		}
		if err := p.send(ctx, items); err != nil {
			return nil // ctx ended mid-retry
		}
		flushed(items)
	}
}

// flushed releases the Flush calls whose markers are in items, now sent.
func flushed(items []item) {
	for _, it := range items {
		if it.flushed != nil {
			close(it.flushed)
		}
	}
}

func (p *Publisher) fill(items []item) []item {
	for len(items) < p.batch {
		select {
		case it := <-p.queue:
			items = append(items, it)
		default:
			return items
		}
	}
	return items
}

func (p *Publisher) drain(ctx context.Context, items []item) error {
	for {
		items = p.fill(items[:0])
		if len(items) == 0 {
			return nil
		}
		// At a stop, what was read goes out unless the disk is almost full.
		if err := p.bus.waitProcess(ctx); err != nil {
			return nil
		}
		if err := p.send(ctx, items); err != nil {
			return nil
		}
		flushed(items)
	}
}

// pending is one message of a round and how many events it carries; a
// dead letter carries its item. pooled: its data is a NewBatch, freed
// when the message is acked.
type pending struct {
	msg    *nats.Msg
	events int
	dead   *item
	pooled bool
}

// pack turns queued items into messages: consecutive events of one
// subject share a message up to MaxBatchBytes, compressed (Compress).
func pack(items []item) []pending {
	var out []pending
	var cur *pending
	for _, it := range items {
		if it.flushed != nil {
			continue // a Flush marker: nothing to publish
		}
		if it.msg != nil {
			out = append(out, pending{msg: it.msg, dead: &it})
			cur = nil
			continue
		}
		if cur == nil || cur.msg.Subject != it.subject || !Fits(cur.msg.Data, len(it.data)) {
			out = append(out, pending{msg: &nats.Msg{Subject: it.subject, Data: NewBatch()}, pooled: true})
			cur = &out[len(out)-1]
		}
		cur.msg.Data = AppendRecord(cur.msg.Data, it.data)
		cur.events++
		if it.buf != nil && cap(*it.buf) <= maxPooledEvent {
			eventBufs.Put(it.buf) // copied: nothing reads it again
		}
	}
	for i := range out {
		if out[i].pooled {
			out[i].msg.Data = Compress(out[i].msg.Data)
		}
	}
	return out
}

// send publishes the items asynchronously and waits for every ack; the
// messages that failed are sent again after a backoff until all succeed.
// A retried batch may already be in the stream (the ack was lost); the
// stages downstream drop repeated events by id.
func (p *Publisher) send(ctx context.Context, items []item) error {
	todo := pack(items)
	backoff := Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ; attempt++ {
		futures := make([]jetstream.PubAckFuture, len(todo))
		var failed []pending
		for i, m := range todo {
			f, err := p.js.PublishMsgAsync(m.msg)
			if err != nil {
				failed = append(failed, m)
				continue
			}
			futures[i] = f
		}
		for i, f := range futures {
			if f == nil {
				continue
			}
			select {
			case ack := <-f.Ok():
				if todo[i].pooled {
					FreeBatch(todo[i].msg.Data) // acked: the client is done with it
				}
				if d := todo[i].dead; d != nil {
					p.bus.countDeadLetter(ack.Stream, d.source, d.reason)
				} else {
					p.m.published.WithLabelValues(ack.Stream).Inc()
					p.events.Add(float64(todo[i].events))
				}
			case err := <-f.Err():
				if attempt == 0 {
					p.log.Warn("publish failed, retrying", "subject", f.Msg().Subject, "err", err)
				}
				failed = append(failed, todo[i])
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(failed) == 0 {
			return nil
		}
		p.retries.Add(float64(len(failed)))
		todo = failed
		if err := backoff.Sleep(ctx, attempt); err != nil {
			return err
		}
	}
}

// Backoff is capped exponential backoff with full jitter.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry number attempt (0-based).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Min
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	// Full jitter between d/2 and d keeps reconnect storms apart.
	return d/2 + rand.N(d/2+1)
}

// Sleep waits Delay(attempt) or until ctx ends.
func (b Backoff) Sleep(ctx context.Context, attempt int) error {
	t := time.NewTimer(b.Delay(attempt))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishEvents publishes evs to EVENTS and returns only when JetStream has
// acked every one, or with the first error. Sources that keep checkpoints
// (the Azure Blob reader) call it and advance their checkpoint only after it
// returned nil; a failed call may have published some of the events, so the
// source re-reads from its old checkpoint and downstream stages drop the
// duplicates by event id (which such sources derive from the record's
// position, so a re-read gives the same ids). While the disk is low it
// waits (see SetGate).
func (b *Bus) PublishEvents(ctx context.Context, evs []*event.Event) error {
	if err := b.waitIngest(ctx); err != nil {
		return err
	}
	items := make([]item, 0, len(evs))
	for _, ev := range evs {
		items = append(items, item{subject: "events." + ev.Source, data: event.AppendEvent(nil, ev)})
	}
	msgs := pack(items)
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := b.js.PublishMsgAsync(m.msg)
		if err != nil {
			return fmt.Errorf("publishing events: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			b.metrics().published.WithLabelValues(ack.Stream).Inc()
		case err := <-f.Err():
			return fmt.Errorf("publishing events: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
