package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler processes one batch of messages. It returns nil when every message
// is done with (processed, or dead-lettered as poison); the batch is then
// acked. It returns an error only for a transient failure (a publish or a
// disk write that could not complete): the same batch is then handed to it
// again after a backoff, before anything newer, so handlers must be
// idempotent.
type Handler func(ctx context.Context, msgs []jetstream.Msg) error

// ConsumerConfig names a durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filters []string      // subject filters; empty = the whole stream
	Batch   int           // messages per fetch; default 256
	AckWait time.Duration // default 30s
}

// Consume runs a durable pull consumer until ctx ends, handing batches to h
// and acking them after h returns nil. It returns nil on a clean stop.
func (b *Bus) Consume(ctx context.Context, cc ConsumerConfig, logger *slog.Logger, h Handler) error {
	if cc.Batch <= 0 {
		cc.Batch = 256
	}
	if cc.AckWait <= 0 {
		cc.AckWait = 30 * time.Second
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, cc.Stream, jetstream.ConsumerConfig{
		Durable:        cc.Durable,
		FilterSubjects: cc.Filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cc.AckWait,
		MaxAckPending:  cc.Batch * 4,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("creating consumer %s on %s: %w", cc.Durable, cc.Stream, err)
	}
	backoff := Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	failures := 0
	msgs := make([]jetstream.Msg, 0, cc.Batch)
	for ctx.Err() == nil {
		// Take what is there without waiting; only when nothing is, wait
		// (up to 500ms) for the next message. Fetch(n) alone would hold a
		// half-full batch until its deadline, adding its wait to every
		// stage's latency.
		msgs = msgs[:0]
		batch, err := cons.FetchNoWait(cc.Batch)
		if err == nil {
			msgs = collect(batch, msgs, cc.Durable, logger)
			if len(msgs) == 0 {
				batch, err = cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
				if err == nil {
					msgs = collect(batch, msgs, cc.Durable, logger)
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.Warn("fetching from consumer failed", "consumer", cc.Durable, "err", err)
			_ = backoff.Sleep(ctx, failures)
			failures++
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		// A failed batch is retried here, as it is, before anything newer
		// is fetched: redelivery through JetStream would let later messages
		// overtake it, and the windows and watermarks care about order.
		for attempt := 0; ; attempt++ {
			err := h(ctx, msgs)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				for _, m := range msgs {
					_ = m.Nak()
				}
				return nil
			}
			delay := backoff.Delay(attempt)
			if attempt == 0 || attempt%10 == 0 {
				logger.Warn("batch failed; retrying it", "consumer", cc.Durable, "messages", len(msgs), "attempt", attempt+1, "retry_in", delay, "err", err)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			for _, m := range msgs {
				_ = m.InProgress() // keep them ours while we retry
			}
		}
		failures = 0
		for _, m := range msgs {
			if err := m.Ack(); err != nil && ctx.Err() == nil {
				logger.Warn("ack failed; the message will be redelivered", "consumer", cc.Durable, "err", err)
			}
		}
	}
	return nil
}

func collect(batch jetstream.MessageBatch, msgs []jetstream.Msg, durable string, logger *slog.Logger) []jetstream.Msg {
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		logger.Debug("fetch ended early", "consumer", durable, "err", err)
	}
	return msgs
}
