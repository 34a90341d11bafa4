package bus

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// An EVENTS message carries a batch of events as JSON lines (one encoded
// Event per line, no trailing newline). One JetStream message and one ack
// per batch instead of per event is what lets ingest keep up with a syslog
// relay; the rule filter acks a message only after every event in it was
// evaluated and its matches acked. A batch never exceeds MaxBatchBytes
// (NATS's default max payload is 1 MiB).
const MaxBatchBytes = 256 << 10

// appendBatch appends one encoded event to a batch payload.
func appendBatch(batch, encoded []byte) []byte {
	if len(batch) > 0 {
		batch = append(batch, '\n')
	}
	return append(batch, encoded...)
}

// DecodeEvents calls fn for each event of an EVENTS message. A line that
// does not decode is passed to bad with its error, and decoding goes on
// with the next line; fn's error stops decoding and is returned.
func DecodeEvents(data []byte, fn func(*event.Event) error, bad func(line []byte, err error) error) error {
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
		var ev event.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			if err := bad(line, fmt.Errorf("decoding event: %w", err)); err != nil {
				return err
			}
			continue
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	return nil
}
