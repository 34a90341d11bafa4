package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// The lateness gate's log. After a kill, the EVENTS messages the rule
// filter had not acked are handed again to the next run, which must judge
// them as the killed run did: an event dead-lettered as late the first
// time, evaluated by a gate that started empty, gives matches the
// uninterrupted run never gave (alerts too many), and an event judged
// against watermarks of messages the killed run never acked is late where
// it was not (alerts lost).
//
// So each batch appends to STATELOG, with its matches and before its
// EVENTS messages are acked, the watermarks each of its EVENTS messages
// moved, tagged with that message's stream sequence. A restart reads them
// back and applies those tagged up to the consumer's ack floor, in order:
// the gate as it stood after the last message acked, which is where the
// rewound consumer resumes (bus.ConsumerConfig.Start). Records tagged past
// the floor (written, never acked) are not applied. A tag is the newest
// EVENTS sequence admitted from so far: a message handed again out of
// order (its ack wait passed) is recorded with watermarks newer messages
// moved, to apply only once those are acked too. A start that cannot
// restore (the log unreadable, the consumer not rewound) purges the log
// and keeps nothing: a later restart must not take an earlier run's
// records for a run that judged with an empty gate.
//
// The records are values, not increments, so a run that writes the same
// tag again (a batch handed again) writes the same values, and a
// snapshot is every watermark as records of the last tag evaluated,
// written when the records since the last one outgrow it: the records
// before a snapshot are purged once the consumer acked past its tag (a
// snapshot cut short by a kill leaves the records it would replace). A
// restart writes one at the floor and purges the rest.
//
// Only with the embedded server, whose durable consumer has this process
// as its only client: rule filters sharing one consumer on an external
// NATS each see part of EVENTS, and their gates start empty after a
// restart, as before.
//
//	STATELOG, subject statelog.filter.<durable>
//	  header Outpost-Gate-Events: EVENTS' creation (unix ns): the records
//	    of an EVENTS made again since are not read
//	  body: records, each
//	    EVENTS stream sequence (uvarint) | flags (byte; 1: every watermark
//	    started over first) | newest of any host (varint, unix ns) |
//	    count (uvarint) | count x (source, host: strings; watermark: varint)
const (
	gateSubjectPrefix = "statelog.filter."
	gateEventsHeader  = "Outpost-Gate-Events"
	gateCleared       = 1
	// gateChunk is the size the records are cut at, in messages well
	// under NATS's default max_payload (1 MiB).
	gateChunk = 256 << 10
)

// gateSnapshotMin is the bytes of records written since the last
// snapshot past which the next is written (or past twice its size).
var gateSnapshotMin int64 = 1 << 20

// gateLog keeps a Stage's gate in STATELOG; used by its consuming
// goroutine only.
type gateLog struct {
	js      jetstream.JetStream
	durable string
	subject string
	created string // EVENTS' creation, as the header gives it
	log     *slog.Logger
	// floor asks the consumer's ack floor (for purges).
	floor func(context.Context) (uint64, error)

	buf  []byte   // the batch's records being cut
	msgs [][]byte // the batch's full chunks
	// ents holds the n entries (entry) of the records being made, cuts
	// where each record's end.
	ents []byte
	n    int
	cuts []entryCut

	written  int64 // bytes published since the last snapshot
	snapSize int64
	snaps    []gateSnap
}

// gateSnap is a snapshot published: the stream sequence of its first
// message and the EVENTS sequence it is as of.
type gateSnap struct{ streamSeq, tag uint64 }

// note records what the gate's admissions since the last note moved, as
// of EVENTS message tag (0: none known, nothing recorded), in records of
// at most about gateChunk bytes: the first says whether every watermark
// started over first (Changes lists only the hosts moved since).
func (l *gateLog) note(tag uint64, g *engine.Gate) {
	cleared, all := g.Changes(l.entry)
	if tag == 0 || (l.n == 0 && !cleared) {
		l.resetEntries()
		return
	}
	flags := byte(0)
	if cleared {
		flags = gateCleared
	}
	l.records(tag, flags, all)
}

// entry appends a host's watermark to the entries of the records being
// cut, and notes where a record of about gateChunk bytes ends.
func (l *gateLog) entry(source, host string, newest int64) {
	l.ents = wire.AppendString(l.ents, source)
	l.ents = wire.AppendString(l.ents, host)
	l.ents = wire.AppendVarint(l.ents, newest)
	l.n++
	if len(l.ents)-l.lastCut().end >= gateChunk {
		l.cuts = append(l.cuts, entryCut{end: len(l.ents), n: l.n})
	}
}

// entryCut is where a record's entries end in ents, and how many entries
// precede that.
type entryCut struct{ end, n int }

func (l *gateLog) lastCut() entryCut {
	if len(l.cuts) == 0 {
		return entryCut{}
	}
	return l.cuts[len(l.cuts)-1]
}

// records appends the entries as records of tag (at least one, even of
// none), the first with flags, and starts the entries over.
func (l *gateLog) records(tag uint64, flags byte, all int64) {
	if last := l.lastCut(); len(l.cuts) == 0 || last.n < l.n {
		l.cuts = append(l.cuts, entryCut{end: len(l.ents), n: l.n})
	}
	var prev entryCut
	for _, c := range l.cuts {
		l.record(tag, flags, all, c.n-prev.n, l.ents[prev.end:c.end])
		flags, prev = 0, c
	}
	l.resetEntries()
}

func (l *gateLog) resetEntries() { l.ents, l.n, l.cuts = l.ents[:0], 0, l.cuts[:0] }

// record appends a record of n entries, cut into the batch's messages.
func (l *gateLog) record(tag uint64, flags byte, all int64, n int, ents []byte) {
	l.buf = wire.AppendUvarint(l.buf, tag)
	l.buf = append(l.buf, flags)
	l.buf = wire.AppendVarint(l.buf, all)
	l.buf = wire.AppendUvarint(l.buf, uint64(n))
	l.buf = append(l.buf, ents...)
	if len(l.buf) >= gateChunk {
		l.msgs = append(l.msgs, l.buf)
		l.buf = nil
	}
}

// drop forgets the batch's records: it failed, and is handed again.
func (l *gateLog) drop() { l.msgs, l.buf = l.msgs[:0], l.buf[:0] }

// publish starts appending the batch's records; the futures say when they
// are durable.
func (l *gateLog) publish() ([]jetstream.PubAckFuture, error) {
	if len(l.buf) > 0 {
		l.msgs = append(l.msgs, l.buf)
		l.buf = nil
	}
	var futures []jetstream.PubAckFuture
	for _, m := range l.msgs {
		f, err := l.js.PublishMsgAsync(&nats.Msg{Subject: l.subject, Data: m, Header: l.header()})
		if err != nil {
			return nil, err
		}
		futures = append(futures, f)
		l.written += int64(len(m))
	}
	clear(l.msgs)
	l.msgs = l.msgs[:0]
	return futures, nil
}

func (l *gateLog) header() nats.Header { return nats.Header{gateEventsHeader: []string{l.created}} }

// due reports whether the records since the last snapshot outgrew it.
func (l *gateLog) due() bool { return l.written > max(gateSnapshotMin, 2*l.snapSize) }

// snapshot writes every watermark of g as records of tag, the EVENTS
// message g last admitted from, waits until they are durable, then purges
// what the snapshots the consumer acked past make useless.
func (l *gateLog) snapshot(ctx context.Context, g *engine.Gate, tag uint64) error {
	if tag == 0 {
		return nil
	}
	g.Watermarks(l.entry)
	l.records(tag, 0, g.Newest())
	written := l.written
	futures, err := l.publish()
	if err != nil {
		return err
	}
	var first uint64
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if first == 0 {
				first = ack.Sequence
			}
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	l.snaps = append(l.snaps, gateSnap{streamSeq: first, tag: tag})
	l.snapSize, l.written = l.written-written, 0
	return l.purge(ctx)
}

// purge drops the records before the newest snapshot whose tag the
// consumer acked.
func (l *gateLog) purge(ctx context.Context) error {
	floor, err := l.floor(ctx)
	if err != nil {
		return err
	}
	keep := -1
	for i, s := range l.snaps {
		if s.tag <= floor {
			keep = i
		}
	}
	if keep < 0 {
		return nil
	}
	st, err := l.js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		return err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(l.subject), jetstream.WithPurgeSequence(l.snaps[keep].streamSeq)); err != nil {
		return err
	}
	l.snaps = append(l.snaps[:0], l.snaps[keep:]...)
	return nil
}

// restore reads the records back into g, those tagged up to floor, then
// writes a snapshot at floor in their place. It fails only if the log
// could not be read (g is then partly restored).
func (l *gateLog) restore(ctx context.Context, g *engine.Gate, floor uint64) error {
	applied, skipped, hosts := 0, 0, 0
	_, err := bus.ReadSubject(ctx, l.js, bus.StreamStateLog, l.subject, 1, l.log, func(seq uint64, h nats.Header, data []byte) {
		if h.Get(gateEventsHeader) != l.created {
			skipped++
			return
		}
		n, err := applyGateRecords(g, data, floor)
		applied += n
		if err != nil {
			l.log.Error("skipping the rest of a damaged lateness gate record", "stream_seq", seq, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("reading the lateness gate's log: %w", err)
	}
	g.Watermarks(func(string, string, int64) { hosts++ })
	if applied > 0 || skipped > 0 {
		l.log.Info("restored the lateness gate's watermarks as of the last EVENTS message acked",
			"events_seq", floor, "hosts", hosts, "records", applied, "other_events_stream", skipped)
	}
	// The gate is restored. What follows only tidies the log: records
	// left past the floor by the killed run hold what this run writes
	// again for the same messages, so failing here loses nothing.
	if hosts == 0 && g.Newest() == 0 {
		err = purgeGateLog(ctx, l.js, l.durable) // nothing to keep
	} else {
		err = l.snapshot(ctx, g, floor)
	}
	if err != nil && ctx.Err() == nil {
		l.log.Warn("tidying the lateness gate's log after its restore failed; it is tidied at its next snapshot", "err", err)
	}
	return nil
}

// applyGateRecords applies to g the records of one message of the gate's
// log tagged up to floor, in order, and returns how many it applied. It
// stops at the first that does not read.
func applyGateRecords(g *engine.Gate, data []byte, floor uint64) (applied int, err error) {
	r := wire.NewReader(data)
	for r.Err() == nil && len(r.Rest()) > 0 {
		tag := r.Uvarint()
		flags := r.Byte()
		all := r.Varint()
		n := r.Count(3) // two strings' lengths and a varint
		if r.Err() != nil {
			break
		}
		use := tag <= floor
		if use {
			applied++
			if flags&gateCleared != 0 {
				g.RestoreClear()
			}
			g.RestoreNewest(max(g.Newest(), all))
		}
		for range n {
			source, host, newest := r.String(), r.String(), r.Varint()
			if use && r.Err() == nil {
				g.Restore(source, host, newest)
			}
		}
	}
	return applied, r.Err()
}

// purgeGateLog drops everything the gate's log of consumer durable holds.
func purgeGateLog(ctx context.Context, js jetstream.JetStream, durable string) error {
	st, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		return err
	}
	err = st.Purge(ctx, jetstream.WithPurgeSubject(gateSubjectPrefix+durable))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	return err
}

// openGateLog is the gate log of the consumer durable on EVENTS, made at
// created.
func openGateLog(js jetstream.JetStream, durable string, created time.Time, log *slog.Logger, floor func(context.Context) (uint64, error)) *gateLog {
	return &gateLog{js: js, durable: durable, subject: gateSubjectPrefix + durable, created: strconv.FormatInt(created.UnixNano(), 10), log: log, floor: floor}
}
