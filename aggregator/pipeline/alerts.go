package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// errAlertNotFound: no alert with that id in ALERTS (never raised, or older
// than the stream's max_age).
var errAlertNotFound = errors.New("no alert with that id in ALERTS")

// FindAlert looks up an alert by id in ALERTS, where alerts stay until the
// stream's max_age. Its id is the Nats-Msg-Id, so the scan reads headers
// and decodes only the match. Bounded by ctx.
func (p *Pipeline) FindAlert(ctx context.Context, id string) (*event.Alert, error) {
	js := p.bus.JetStream()
	cons, err := js.OrderedConsumer(ctx, bus.StreamAlerts, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if m.Headers().Get(jetstream.MsgIDHeader) != id {
				continue
			}
			var a event.Alert
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				return nil, err
			}
			return &a, nil
		}
		if n == 0 {
			return nil, errAlertNotFound
		}
	}
	return nil, ctx.Err()
}

// alertLookups bounds the /alerts/{id} lookups at once: each may read the
// whole ALERTS stream.
var alertLookups = make(chan struct{}, 4)

// serveAlert answers GET /alerts/{id} with the alert as JSON.
func (p *Pipeline) serveAlert(w http.ResponseWriter, r *http.Request) {
	select {
	case alertLookups <- struct{}{}:
		defer func() { <-alertLookups }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many alert lookups at once", http.StatusTooManyRequests)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	a, err := p.FindAlert(ctx, r.PathValue("id"))
	switch {
	case errors.Is(err, errAlertNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	}
}
