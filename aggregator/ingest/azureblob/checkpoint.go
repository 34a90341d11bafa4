package azureblob

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Checkpoint keys in the shared Badger database (see aggregator/state):
//
//	b/c/<account>\x00<container>\x00<blob>   checkpoint of one blob (JSON)
//	b/r/<account>\x00<container>             oldest hour still to list (RFC 3339)
//
// A checkpoint is written only after JetStream acked every event (and
// every dead letter) that came before its position, so after a crash the
// reader resumes at or before the first unacked record: at-least-once, and
// the re-read records get the same event ids (they derive from positions).
//
// Entries expire checkpointTTL after their last write. A blob is listed
// only while its hour is open (lookback, at most 7 days), so an expired
// checkpoint belongs to a blob that is never read again; the TTL also
// covers an appliance that was down for weeks, whose first poll lists the
// hours since it stopped.
const checkpointTTL = 45 * 24 * time.Hour

// checkpoint is how far one blob has been read and delivered.
type checkpoint struct {
	// Created is the blob's creation time. A blob deleted by retention and
	// created again under the same name has another, and starts over.
	Created time.Time `json:"created"`
	// Offset: append blobs, the bytes consumed (always just after a LF);
	// flow-log block blobs, the end of the last delivered record block.
	Offset int64 `json:"offset"`
	// Blocks is how many record blocks (after the `{"records":[` head) of
	// a flow-log block blob are delivered, LastBlock the id of the last
	// of them: Azure inserts new blocks just before the `]}` tail, so the
	// delivered ones keep their index and id.
	Blocks    int    `json:"blocks,omitempty"`
	LastBlock string `json:"last_block,omitempty"`
	// BlockDigest chains the ids and sizes of those Blocks record blocks
	// (blockDigest): a delivered block replaced, resized or moved, not
	// only the last one, shows as a different digest. Empty in checkpoints
	// written before it existed; then only LastBlock is compared.
	BlockDigest string `json:"block_digest,omitempty"`
	// Records counts the records delivered from a block blob that does not
	// have the flow-log block layout (read as a whole document).
	Records int `json:"records,omitempty"`
	// ETag of a block blob when it was last read to the end: while the
	// listing shows the same ETag there is nothing new.
	ETag string `json:"etag,omitempty"`
}

func blobKey(account, container, blob string) []byte {
	return []byte("b/c/" + account + "\x00" + container + "\x00" + blob)
}

func resumeKey(account, container string) []byte {
	return []byte("b/r/" + account + "\x00" + container)
}

// loadCheckpoint returns the blob's checkpoint, zero if there is none.
func (s *Source) loadCheckpoint(key []byte) (checkpoint, error) {
	var cp checkpoint
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &cp) })
	})
	if err != nil {
		return checkpoint{}, fmt.Errorf("reading checkpoint: %w", err)
	}
	return cp, nil
}

// saveCheckpoint must be called only after the sink acked everything
// before the position it records.
func (s *Source) saveCheckpoint(key []byte, cp checkpoint) error {
	v, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(key, v).WithTTL(checkpointTTL))
	}); err != nil {
		return fmt.Errorf("writing checkpoint: %w", err)
	}
	s.m.checkpoints.Inc()
	return nil
}

// loadResume returns the oldest hour of the container still to list, and
// false when the container was never polled.
func (s *Source) loadResume(key []byte) (time.Time, bool, error) {
	var t time.Time
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			found = true
			return t.UnmarshalText(v)
		})
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("reading resume hour: %w", err)
	}
	return t, found, nil
}

func (s *Source) saveResume(key []byte, t time.Time) error {
	v, _ := t.UTC().MarshalText()
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(key, v).WithTTL(checkpointTTL))
	}); err != nil {
		return fmt.Errorf("writing resume hour: %w", err)
	}
	return nil
}
