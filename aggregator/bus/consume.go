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
// disk write that could not complete): the batch is then redelivered after
// a backoff, so handlers must be idempotent.
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
		batch, err := cons.Fetch(cc.Batch, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.Warn("fetching from consumer failed", "consumer", cc.Durable, "err", err)
			_ = backoff.Sleep(ctx, failures)
			failures++
			continue
		}
		msgs = msgs[:0]
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			logger.Debug("fetch ended early", "consumer", cc.Durable, "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		if err := h(ctx, msgs); err != nil {
			delay := backoff.Delay(failures)
			failures++
			if ctx.Err() == nil {
				logger.Warn("batch failed, will be redelivered", "consumer", cc.Durable, "messages", len(msgs), "retry_in", delay, "err", err)
			}
			for _, m := range msgs {
				_ = m.NakWithDelay(delay)
			}
			_ = backoff.Sleep(ctx, failures)
			continue
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
