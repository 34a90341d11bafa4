package bus

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readFetch is how many messages ReadSubject asks for at a time (at most
// 16 MiB of STATELOG's parts), readFetchWait how long it waits for them.
const (
	readFetch     = 64
	readFetchWait = 10 * time.Second
)

// ReadSubject calls take for every message of subject in stream from
// stream sequence from on, in order, and returns the stream sequence of
// the last it read (0: none). It reads through an ephemeral pull consumer
// without acks: JetStream streams the messages instead of answering one
// request per message. It reads what the subject held when it began; a
// message gone since (purged) ends the read, as the end of the subject
// does. The stream gone mid-read fails it.
func ReadSubject(ctx context.Context, js jetstream.JetStream, stream, subject string, from uint64, log *slog.Logger,
	take func(streamSeq uint64, h nats.Header, data []byte)) (tail uint64, err error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(from, 1),
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute, // if this process dies before deleting it
	})
	if err != nil {
		return 0, err
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := st.DeleteConsumer(dctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			log.Debug("deleting a reader of "+stream, "subject", subject, "err", err)
		}
	}()
	for pending := info.NumPending; pending > 0; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		batch, err := cons.Fetch(int(min(pending, readFetch)), jetstream.FetchMaxWait(readFetchWait))
		if err != nil {
			return 0, err
		}
		got := uint64(0)
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				return 0, err
			}
			tail = max(tail, md.Sequence.Stream)
			take(md.Sequence.Stream, msg.Headers(), msg.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return 0, err
		}
		if got == 0 {
			break
		}
		pending -= min(got, pending)
	}
	return tail, nil
}
