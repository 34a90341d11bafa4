package forwarder

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-siem/outpost/aggregator/state"
)

// sentIDs remembers, per destination, the ids of alerts already delivered,
// in the shared Badger database under f/<destination>\x00<alert id>, each
// with a TTL (forwarder.sent_ids_ttl).
//
// Ordering is what makes it work: ids are written after the alerts were
// confirmed delivered (see deliver.go) and before the JetStream ack. A crash between delivery and this write replays the alerts
// as duplicates with the same externalId (at-least-once); a crash between
// this write and the ack replays them and they are suppressed here. The
// key is the consuming destination's, so an alert that went to a fallback
// counts as delivered for the destination whose consumer sent it.
type sentIDs struct {
	db     *state.DB
	prefix string
	ttl    time.Duration
}

func newSentIDs(db *state.DB, dest string, ttl time.Duration) *sentIDs {
	return &sentIDs{db: db, prefix: "f/" + dest + "\x00", ttl: ttl}
}

func (s *sentIDs) key(id string) []byte { return []byte(s.prefix + id) }

// seen reports for each id whether it was delivered before.
func (s *sentIDs) seen(ids []string) ([]bool, error) {
	out := make([]bool, len(ids))
	err := s.db.View(func(txn *badger.Txn) error {
		for i, id := range ids {
			_, err := txn.Get(s.key(id))
			switch {
			case err == nil:
				out[i] = true
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading sent alert ids: %w", err)
	}
	return out, nil
}

// record stores ids as delivered; with state.sync_writes on (the default)
// it is durable when record returns. A batch too large for one Badger
// transaction (a backlog delivered at once) is written in several: a crash
// between them leaves some ids unrecorded, whose alerts are then sent again
// (at-least-once), never lost.
func (s *sentIDs) record(ids []string) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, id := range ids {
		if err := wb.SetEntry(badger.NewEntry(s.key(id), nil).WithTTL(s.ttl)); err != nil {
			return fmt.Errorf("recording sent alert ids: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("recording sent alert ids: %w", err)
	}
	return nil
}
