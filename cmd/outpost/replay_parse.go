package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
	"time"

	"encoding/json"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/rules"
)

func readChunks(ctx context.Context, in io.Reader, free <-chan *replayChunk, work, order chan<- *replayChunk) error {
	defer close(work)
	defer close(order)
	var carry []byte // the start of a line the last chunk cut
	line := 1
	for {
		var c *replayChunk
		select {
		case c = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		buf := c.data[:0]
		if cap(buf) < replayChunkSize+len(carry) {
			buf = make([]byte, 0, replayChunkSize+len(carry))
		}
		buf = append(buf, carry...)
		eof := false
		for !eof {
			n, err := io.ReadFull(in, buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				eof = true
			case err != nil:
				return fmt.Errorf("reading input: %w", err)
			}
			if eof || bytes.IndexByte(buf[len(buf)-n:], '\n') >= 0 {
				break
			}
			buf = slices.Grow(buf, len(buf)) // a line longer than the buffer
		}
		end := len(buf)
		if !eof {
			end = bytes.LastIndexByte(buf, '\n') + 1
		}
		// carry must not alias buf, which a worker reads while the next
		// chunk is being filled.
		carry = append(carry[:0], buf[end:]...)
		c.data, c.firstLine = buf[:end], line
		c.lines = bytes.Count(c.data, []byte{'\n'})
		if end > 0 && buf[end-1] != '\n' {
			c.lines++ // the last line, unterminated
		}
		line += c.lines
		if len(c.data) > 0 {
			order <- c
			work <- c
		}
		if eof {
			return nil
		}
	}
}

// replayWorker parses lines and evaluates the rules' conditions, as the
// syslog source and the rule filter do. One per goroutine.
type replayWorker struct {
	rules    []*rules.Rule
	parser   *syslog.Parser
	events   bool // lines are JSON events (--input-format events)
	received time.Time
	seed     maphash.Seed
	shards   int
	eval     engine.Evaluator
	ids      []byte
	idEnds   []int
	line     []byte
}

func (w *replayWorker) parse(c *replayChunk) {
	c.unparsed = 0
	c.events, c.matches = c.events[:0], c.matches[:0]
	clear(c.noKey)
	clear(c.evalErrs)
	// Event ids are line numbers. They are cut from one string per chunk,
	// which saves an allocation per line; an id a window keeps keeps that
	// string (about 7 bytes a line) alive.
	w.ids, w.idEnds = w.ids[:0], w.idEnds[:0]
	for i := range c.lines {
		w.ids = strconv.AppendInt(w.ids, int64(c.firstLine+i), 10)
		w.idEnds = append(w.idEnds, len(w.ids))
	}
	ids := string(w.ids)
	data := c.data
	for i := 0; len(data) > 0; i++ {
		line := data
		if j := bytes.IndexByte(data, '\n'); j >= 0 {
			line, data = data[:j], data[j+1:]
		} else {
			data = nil
		}
		line = trimLineEnd(line)
		if len(line) == 0 {
			continue // the syslog source skips empty frames
		}
		if len(line) > syslog.DefaultMaxMessageSize && !w.events {
			c.unparsed++ // the source would dead-letter it as oversize
			continue
		}
		if line[0] != '<' && !w.events {
			// A log file's line (rsyslog, /var/log/auth.log) has no PRI.
			// The one RFC 3164 assumes then, user.notice, lets its
			// header be read as the sender's would have been.
			w.line = append(append(w.line[:0], "<13>"...), line...)
			line = w.line
		}
		if len(c.events) < cap(c.events) {
			c.events = c.events[:len(c.events)+1] // Parse overwrites all of it
		} else {
			c.events = append(c.events, event.Event{})
		}
		ev := &c.events[len(c.events)-1]
		if err := w.decode(line, ev); err != nil {
			c.unparsed++
			c.events = c.events[:len(c.events)-1]
			continue
		}
		if ev.ID == "" {
			start := 0
			if i > 0 {
				start = w.idEnds[i-1]
			}
			ev.ID = ids[start:w.idEnds[i]]
		}
		idx := int32(len(c.events) - 1)
		for ri, r := range w.rules {
			hits, noKey, err := w.eval.Hits(r, ev)
			if err != nil {
				e := &c.evalErrs[ri]
				if e.n++; e.first == nil {
					e.first = fmt.Errorf("line %s: %w", ev.ID, err)
				}
				continue
			}
			c.noKey[ri] += noKey
			for _, h := range hits {
				hash := maphash.String(w.seed, h.Key)
				c.matches = append(c.matches, replayMatch{
					event: idx, rule: int32(ri), shard: int32(hash % uint64(w.shards)), hash: hash, hit: h,
				})
			}
		}
	}
}

// decode reads one line into ev (overwriting all of it): a syslog message
// as the syslog source parses it, or an event as JSON. An event needs a
// time; it keeps its own received and sender, or gets replay's.
func (w *replayWorker) decode(line []byte, ev *event.Event) error {
	if !w.events {
		return w.parser.Parse(line, w.received, replaySender, ev)
	}
	*ev = event.Event{}
	if err := json.Unmarshal(line, ev); err != nil {
		return err
	}
	if ev.Time.IsZero() {
		return errors.New("event without a time")
	}
	if ev.Received.IsZero() {
		ev.Received = w.received
	}
	if ev.Sender == "" {
		ev.Sender = replaySender
	}
	return nil
}

// trimLineEnd strips the CR and NUL bytes senders leave at the end of a
// line, as the syslog source strips a frame's trailer.
func trimLineEnd(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\r' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}
