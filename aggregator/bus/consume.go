package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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

// AsyncHandler processes one batch in two parts: it returns once the work
// in memory is done and the batch's writes are started, with a wait that
// returns once they are durable (JetStream's acks, a Badger commit); a nil
// wait means they already are. Consume hands it the next batch before it
// calls the previous batch's wait, so one batch's I/O overlaps the next
// one's processing, and acks messages only after their wait returned nil.
//
// When a wait fails, Consume still calls the wait of the batch handed after
// it (the handler must make that one fail too: it was built on effects that
// never became durable) and then hands both again, oldest first, one at a
// time, each waited for before the next, until they succeed. As with
// Handler, a handler must be idempotent.
type AsyncHandler func(ctx context.Context, msgs []jetstream.Msg) (wait func() error, err error)

// ConsumerConfig names a durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filters []string      // subject filters; empty = the whole stream
	Batch   int           // most messages per fetch; default 256
	AckWait time.Duration // default 30s
	// BatchBytes, if set, sizes each fetch to about this many bytes from
	// the sizes of the messages seen so far (at most Batch messages, at
	// first 16): a stream of small messages (a steady trickle) then gives
	// batches as large as a backlog of full ones. Stages whose cost is per
	// batch as much as per message need it.
	BatchBytes int
	// InFlight is how many batches an AsyncHandler may have handed whose
	// waits have not returned (default 1: one batch's I/O overlaps the
	// next one's processing).
	InFlight int
	// InFlightBytes, if set, also bounds the batches in flight by the
	// size of their messages (memory: their data is held until acked).
	InFlightBytes int
	// MaxAckPending is the consumer's limit of delivered, unacked
	// messages; default Batch x (InFlight + 3).
	MaxAckPending int
	// Flush, if set, asks the handler to make what it was handed durable
	// now rather than at its own pace (a checkpoint now). Consume calls it
	// before it blocks on a wait with nothing else to do: when retrying,
	// when the disk is held, at the InFlight limit, at the end.
	Flush func()
	// Reset, if set, is called before a batch is handed again after a
	// failure: the handler drops what it holds of batches not yet durable
	// (they are all handed again, in order).
	Reset func()
	// Start, if set, is called once on the embedded server, whose durable
	// consumers have this process as their only client, before the first
	// batch is fetched: with the consumer's ack floor (the stream sequence
	// through which every message was acked) and whether the consumer was
	// rewound to it, so that the next messages handed are those after
	// the floor, in order (if not, those an earlier run did not ack come
	// after their ack wait).
	Start func(ctx context.Context, ackFloor uint64, rewound bool)
}

// fetchSize picks how many messages to fetch next: BatchBytes over the
// average message size, within [1, Batch].
func (cc *ConsumerConfig) fetchSize(avg float64) int {
	if cc.BatchBytes <= 0 {
		return cc.Batch
	}
	if avg <= 0 {
		return min(16, cc.Batch)
	}
	return max(1, min(cc.Batch, int(float64(cc.BatchBytes)/avg)))
}

// Consume runs a durable pull consumer until ctx ends, handing batches to h
// and acking them after h returns nil. It returns nil on a clean stop.
func (b *Bus) Consume(ctx context.Context, cc ConsumerConfig, logger *slog.Logger, h Handler) error {
	return b.ConsumeAsync(ctx, cc, logger, func(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
		return nil, h(ctx, msgs)
	})
}

// unsettled is a batch handed to an AsyncHandler whose wait was not called;
// gen is the recovery generation it was handed in (see ConsumeAsync).
type unsettled struct {
	msgs  []jetstream.Msg
	wait  func() error
	gen   int
	bytes int
}

// settled is what became of an unsettled batch's wait.
type settled struct {
	u   *unsettled
	err error
}

// errEarlierFailed fails, without acking it, a batch handed after one
// whose wait failed: it was built on effects that never became durable.
var errEarlierFailed = errors.New("a batch handed before it failed")

// ConsumeAsync is Consume for an AsyncHandler. Up to cc.InFlight batches
// are handed and not yet settled at a time; a goroutine calls their waits
// in order and acks each batch whose wait returned nil, so a handler whose
// writes become durable together (a checkpoint every interval) has every
// batch since the last one in flight. When a wait fails, every batch handed
// after it fails too (its wait is still called, but it is not acked), and
// all of them are handed again, oldest first, one at a time, each waited
// for before the next, before anything newer is fetched.
func (b *Bus) ConsumeAsync(ctx context.Context, cc ConsumerConfig, logger *slog.Logger, h AsyncHandler) error {
	if cc.Batch <= 0 {
		cc.Batch = 256
	}
	if cc.AckWait <= 0 {
		cc.AckWait = 30 * time.Second
	}
	if cc.InFlight <= 0 {
		cc.InFlight = 1
	}
	if cc.MaxAckPending <= 0 {
		cc.MaxAckPending = cc.Batch * (cc.InFlight + 3)
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, cc.Stream, jetstream.ConsumerConfig{
		Durable:        cc.Durable,
		FilterSubjects: cc.Filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cc.AckWait,
		MaxAckPending:  cc.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("creating consumer %s on %s: %w", cc.Durable, cc.Stream, err)
	}
	if b.server != nil {
		// Embedded: this process is the durable consumer's only client.
		// What an earlier run was handed and did not ack (it was killed)
		// would come again only once its ack wait passed, after newer
		// messages: late then, to the lateness gate and the windows'
		// watermark, and lost. Rewound to the ack floor, the consumer
		// hands them first, in stream order.
		r, err := b.js.ResetConsumer(ctx, cc.Stream, cc.Durable)
		if err != nil && ctx.Err() == nil {
			logger.Warn("rewinding the consumer to its ack floor failed; messages an earlier run did not ack come again after their ack wait", "consumer", cc.Durable, "err", err)
		}
		if cc.Start != nil && ctx.Err() == nil {
			if err == nil && r.ConsumerInfo != nil {
				cc.Start(ctx, r.AckFloor.Stream, true)
			} else {
				cc.Start(ctx, cons.CachedInfo().AckFloor.Stream, false)
			}
		}
	}
	c := &consumer{b: b, cc: cc, log: logger, h: h, backoff: Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}}

	// The waiter: calls the waits in order and acks. Once a wait of
	// generation g failed, every later batch of g fails without an ack;
	// the loop below recovers them and moves to generation g+1.
	pending := make(chan *unsettled, cc.InFlight+1)
	results := make(chan settled, cc.InFlight+1)
	waiterDone := make(chan struct{})
	go func() {
		defer close(waiterDone)
		bad := -1
		for u := range pending {
			err := u.wait()
			switch {
			case u.gen == bad:
				err = errEarlierFailed
			case err != nil:
				bad = u.gen
			default:
				c.ack(ctx, u.msgs)
			}
			results <- settled{u, err}
		}
	}()
	defer func() {
		close(pending)
		<-waiterDone
	}()
	inflight, inflightBytes, gen := 0, 0, 0
	// take settles one batch in flight, waiting for it if block. After a
	// failure it takes every batch in flight and hands them again. It
	// returns false if ctx ended first.
	take := func(block bool) bool {
		var r settled
		if block {
			if cc.Flush != nil {
				cc.Flush()
			}
			r = <-results
		} else {
			select {
			case r = <-results:
			default:
				return true
			}
		}
		inflight--
		inflightBytes -= r.u.bytes
		if r.err == nil {
			return true
		}
		failed, cause := []*unsettled{r.u}, r.err
		for ; inflight > 0; inflight-- {
			failed = append(failed, (<-results).u)
		}
		inflightBytes = 0
		gen++
		if ctx.Err() != nil {
			c.nak(failed...)
			return false
		}
		return c.retry(ctx, cause, failed...)
	}
	// settleAll takes every batch in flight.
	settleAll := func() bool {
		for inflight > 0 {
			if !take(true) {
				return false
			}
		}
		return true
	}
	// poll takes the batches already settled, without waiting.
	poll := func() bool {
		for n := inflight; n > 0 && inflight > 0; n-- {
			if !take(false) {
				return false
			}
		}
		return true
	}
	failures := 0
	var avgSize float64 // bytes per message, for BatchBytes
	for ctx.Err() == nil {
		if b.processHeld() {
			// The disk is almost full: finish the batches in flight, then
			// fetch nothing (no ack deadline runs out on a held batch)
			// until there is room again.
			if !settleAll() {
				return nil
			}
			if b.waitProcess(ctx) != nil {
				break
			}
		}
		// Take what is there without waiting; only when nothing is, wait
		// (up to 500ms) for the next message. Fetch(n) alone would hold a
		// half-full batch until its deadline, adding its wait to every
		// stage's latency.
		size := cc.fetchSize(avgSize)
		msgs := make([]jetstream.Msg, 0, size)
		batch, err := cons.FetchNoWait(size)
		if err == nil {
			msgs = collect(batch, msgs, cc.Durable, logger)
			if len(msgs) == 0 {
				if !poll() {
					return nil
				}
				batch, err = cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
				if err == nil {
					msgs = collect(batch, msgs, cc.Durable, logger)
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			logger.Warn("fetching from consumer failed", "consumer", cc.Durable, "err", err)
			_ = c.backoff.Sleep(ctx, failures)
			failures++
			continue
		}
		failures = 0
		if len(msgs) == 0 {
			continue
		}
		size = 0
		for _, m := range msgs {
			// A moving average over the last few dozen messages.
			if avgSize == 0 {
				avgSize = float64(len(m.Data()))
			}
			avgSize += (float64(len(m.Data())) - avgSize) / 32
			size += len(m.Data())
		}
		cur := &unsettled{msgs: msgs, gen: gen, bytes: size}
		cur.wait, err = h(ctx, msgs)
		if err != nil {
			// Nothing of cur took effect; settle what is in flight, then
			// hand cur again until it succeeds.
			if !settleAll() || !c.retry(ctx, err, cur) {
				return nil
			}
			continue
		}
		if cur.wait == nil {
			if inflight == 0 {
				c.ack(ctx, cur.msgs)
				continue
			}
			cur.wait = func() error { return nil } // acked in order, after those before it
		}
		pending <- cur // room: inflight <= InFlight before it
		inflight++
		inflightBytes += cur.bytes
		for inflight > cc.InFlight || (cc.InFlightBytes > 0 && inflight > 1 && inflightBytes > cc.InFlightBytes) {
			if !take(true) {
				return nil
			}
		}
	}
	settleAll()
	return nil
}

type consumer struct {
	b       *Bus
	cc      ConsumerConfig
	log     *slog.Logger
	h       AsyncHandler
	backoff Backoff
	// stopCtx is the acks' context once the consumer's ended
	// (ackContext).
	stopOnce sync.Once
	stopCtx  context.Context
}

// ackTimeout bounds one ack's round trip to JetStream.
const ackTimeout = 5 * time.Second

// ack acknowledges a batch and makes sure JetStream got it: a fire-and-
// forget ack sent while JetStream is down (out of disk, restarting) or
// across a reconnect is lost without a word, and the message stays in its
// work queue to be handled again. The acks go out without waiting and the
// last is a double ack: JetStream processes one connection's acks in
// order, so its reply confirms the others. If it fails, or the connection
// reconnected meanwhile, every message is double-acked, each retried with
// backoff until confirmed, until half the ack wait has passed (past it the
// server redelivers anyway; handlers are idempotent) or ctx ends (a batch
// settled after ctx ended is still acked, within ackTimeout).
// Failures are counted in outpost_bus_ack_errors_total{stream}.
func (c *consumer) ack(ctx context.Context, msgs []jetstream.Msg) {
	if len(msgs) == 0 {
		return
	}
	ctx = c.ackContext(ctx)
	reconnects := c.b.nc.Stats().Reconnects
	last := len(msgs) - 1
	for _, m := range msgs[:last] {
		_ = m.Ack() // confirmed below
	}
	if c.doubleAck(ctx, msgs[last]) == nil && c.b.nc.Stats().Reconnects == reconnects {
		return
	}
	deadline := time.Now().Add(c.cc.AckWait / 2)
	for _, m := range msgs {
		for attempt := 0; ; attempt++ {
			err := c.doubleAck(ctx, m)
			if err == nil || ctx.Err() != nil {
				break
			}
			if time.Now().After(deadline) {
				c.log.Warn("ack not confirmed; the message will be redelivered", "consumer", c.cc.Durable, "err", err)
				break
			}
			if attempt == 0 {
				c.log.Warn("ack not confirmed; retrying", "consumer", c.cc.Durable, "err", err)
			}
			if c.backoff.Sleep(ctx, attempt) != nil {
				return
			}
		}
	}
}

// ackContext is ctx while it runs. A graceful stop settles the batches
// in flight: those durable after ctx ended are still acked, or they are
// handed again to the next run; their acks share one context, ending
// ackTimeout after the first.
func (c *consumer) ackContext(ctx context.Context) context.Context {
	if ctx.Err() == nil {
		return ctx
	}
	c.stopOnce.Do(func() {
		var cancel context.CancelFunc
		c.stopCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		time.AfterFunc(ackTimeout, cancel) // ends by its timeout; released then
	})
	return c.stopCtx
}

func (c *consumer) doubleAck(ctx context.Context, m jetstream.Msg) error {
	actx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	err := m.DoubleAck(actx)
	if err != nil && ctx.Err() == nil {
		c.b.metrics().ackErrors.WithLabelValues(c.cc.Stream).Inc()
	}
	return err
}

func (c *consumer) nak(us ...*unsettled) {
	for _, u := range us {
		if u == nil {
			continue
		}
		for _, m := range u.msgs {
			_ = m.Nak()
		}
	}
}

// retry hands each batch again, in order and one at a time, until it
// succeeds, then acks it; cause is why the first one failed. A failed batch is retried here, before anything
// newer is fetched: redelivery through JetStream would let later messages
// overtake it, and the windows and watermarks care about order. It returns
// false if ctx ended first (the batches are then nak'ed).
func (c *consumer) retry(ctx context.Context, cause error, us ...*unsettled) bool {
	for i, u := range us {
		if u == nil {
			continue
		}
		for attempt := 0; ; attempt++ {
			for _, m := range u.msgs {
				_ = m.InProgress() // keep them ours while we retry
			}
			delay := c.backoff.Delay(attempt)
			if attempt == 0 || attempt%10 == 0 {
				c.log.Warn("batch failed; retrying it", "consumer", c.cc.Durable, "messages", len(u.msgs), "attempt", attempt+1, "retry_in", delay, "err", cause)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				c.nak(us[i:]...)
				return false
			}
			if c.cc.Reset != nil {
				c.cc.Reset()
			}
			wait, err := c.h(ctx, u.msgs)
			if err == nil && wait != nil {
				if c.cc.Flush != nil {
					c.cc.Flush()
				}
				err = wait()
			}
			if err == nil {
				break
			}
			cause = err
		}
		c.ack(ctx, u.msgs)
	}
	return true
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
