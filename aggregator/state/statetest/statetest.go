// Package statetest gives tests a real Badger database (Outpost's
// settings) in a temp dir.
package statetest

import (
	"io"
	"log/slog"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/state"
)

// Open opens a database with the default config in a temp dir of t,
// closed when t ends.
func Open(t testing.TB) *state.DB {
	t.Helper()
	var cfg state.Config
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := state.Open(t.TempDir(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
