package bus

import (
	"bytes"
	"fmt"
	json "github.com/goccy/go-json"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// EVENTS and MATCHES messages carry batches as JSON lines (one encoded
// Event or Match per line, no trailing newline). One JetStream message and one ack
// per batch instead of per event is what lets ingest keep up with a syslog
// relay; the rule filter acks a message only after every event in it was
// evaluated and its matches acked. A batch never exceeds MaxBatchBytes
// (NATS's default max payload is 1 MiB).
const MaxBatchBytes = 256 << 10

// AppendLine appends one encoded record to a batch payload.
func AppendLine(batch, encoded []byte) []byte {
	if len(batch) > 0 {
		batch = append(batch, '\n')
	}
	return append(batch, encoded...)
}

// SplitLines calls fn for each non-empty line of a batch payload; fn's
// error stops it and is returned.
func SplitLines(data []byte, fn func(line []byte) error) error {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

// DecodeEvents calls fn for each event of an EVENTS message. A line that
// does not decode is passed to bad with its error, and decoding goes on
// with the next line; fn's error stops decoding and is returned.
func DecodeEvents(data []byte, fn func(*event.Event) error, bad func(line []byte, err error) error) error {
	return SplitLines(data, func(line []byte) error {
		var ev event.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return bad(line, fmt.Errorf("decoding event: %w", err))
		}
		return fn(&ev)
	})
}
