package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("publisher closed")

// Publisher takes events from the sources and publishes them to EVENTS in
// batches of asynchronous publishes, waiting for JetStream's acks per batch.
//
// Publish only enqueues: it blocks while the queue is full, which is how
// backpressure from JetStream (a full stream, a lost connection) reaches the
// sources. A failed publish is retried with backoff until it succeeds or the
// publisher is stopped; nothing is dropped. Events still queued when the
// process dies are lost; the queue is small (Capacity) for that reason, and
// syslog senders have no acknowledgement to hold them anyway.
type Publisher struct {
	js    jetstream.JetStream
	queue chan *nats.Msg
	done  chan struct{}
	batch int
	log   *slog.Logger

	published *prometheus.CounterVec
	retries   prometheus.Counter
	queued    prometheus.GaugeFunc
}

// PublisherConfig sizes the publisher; zero values get defaults.
type PublisherConfig struct {
	Capacity int // events queued before Publish blocks; default 8192
	Batch    int // publishes in flight per batch; default 512
}

// NewPublisher returns a publisher on b. Run must be running for Publish to
// make progress.
func NewPublisher(b *Bus, cfg PublisherConfig, logger *slog.Logger, reg prometheus.Registerer) *Publisher {
	if cfg.Capacity <= 0 {
		cfg.Capacity = 8192
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 512
	}
	p := &Publisher{
		js:    b.js,
		queue: make(chan *nats.Msg, cfg.Capacity),
		done:  make(chan struct{}),
		batch: cfg.Batch,
		log:   logger.With("component", "publisher"),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_bus_published_messages_total",
			Help: "Messages acknowledged by JetStream, by stream.",
		}, []string{"stream"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_bus_publish_retries_total",
			Help: "Publishes that failed (full stream, lost connection) and were retried.",
		}),
	}
	p.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_bus_publish_queue_events",
		Help: "Events waiting in memory for their JetStream publish.",
	}, func() float64 { return float64(len(p.queue)) })
	reg.MustRegister(p.published, p.retries, p.queued)
	return p
}

// Publish queues ev for EVENTS under events.<ev.Source>.
func (p *Publisher) Publish(ctx context.Context, ev *event.Event) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding event: %w", err)
	}
	return p.enqueue(ctx, &nats.Msg{Subject: "events." + ev.Source, Data: data})
}

// DeadLetter queues raw input that could not be parsed for DEADLETTER,
// with the reason and sender in headers.
func (p *Publisher) DeadLetter(ctx context.Context, source, reason string, raw []byte, sender string) error {
	return p.enqueue(ctx, deadLetterMsg(source, reason, append([]byte(nil), raw...), sender))
}

func (p *Publisher) enqueue(ctx context.Context, m *nats.Msg) error {
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
	batch := make([]*nats.Msg, 0, p.batch)
	for {
		batch = batch[:0]
		select {
		case m := <-p.queue:
			batch = append(batch, m)
		case <-p.done:
			return p.drain(ctx, batch)
		case <-ctx.Done():
			return nil
		}
		batch = p.fill(batch)
		if err := p.send(ctx, batch); err != nil {
			return nil // ctx ended mid-retry
		}
	}
}

func (p *Publisher) fill(batch []*nats.Msg) []*nats.Msg {
	for len(batch) < p.batch {
		select {
		case m := <-p.queue:
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

func (p *Publisher) drain(ctx context.Context, batch []*nats.Msg) error {
	for {
		batch = p.fill(batch[:0])
		if len(batch) == 0 {
			return nil
		}
		if err := p.send(ctx, batch); err != nil {
			return nil
		}
	}
}

// send publishes the batch asynchronously and waits for every ack; the
// messages that failed are sent again after a backoff until all succeed.
func (p *Publisher) send(ctx context.Context, batch []*nats.Msg) error {
	pending := batch
	backoff := Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 0; ; attempt++ {
		futures := make([]jetstream.PubAckFuture, 0, len(pending))
		var failed []*nats.Msg
		for _, m := range pending {
			f, err := p.js.PublishMsgAsync(m)
			if err != nil {
				failed = append(failed, m)
				continue
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				p.published.WithLabelValues(ack.Stream).Inc()
			case err := <-f.Err():
				if attempt == 0 {
					p.log.Warn("publish failed, retrying", "subject", f.Msg().Subject, "err", err)
				}
				failed = append(failed, f.Msg())
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(failed) == 0 {
			return nil
		}
		p.retries.Add(float64(len(failed)))
		pending = failed
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
// position, so a re-read gives the same ids).
func (b *Bus) PublishEvents(ctx context.Context, evs []*event.Event) error {
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encoding event: %w", err)
		}
		f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: "events." + ev.Source, Data: data})
		if err != nil {
			return fmt.Errorf("publishing event: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publishing event: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
