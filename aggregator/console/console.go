// Package console is Outpost's status page: one HTML page with its script
// and style embedded in the binary (no CDN, no third-party assets), that
// polls GET /api/console for a Snapshot and GET /alerts/{id} for an
// alert's explanation, and draws its charts itself as SVG.
//
// The pipeline fills the Snapshot; this package only defines it and serves
// the assets.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Handler serves the page at / and its assets under /assets/.
func Handler() http.Handler {
	sub, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(sub)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", CSP)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Files only: no listing, no second copy of the page.
		if p := r.URL.Path; p == "" || strings.HasSuffix(p, "/") || path.Clean(p) == "." || path.Base(p) == "index.html" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Security-Policy", CSP)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})))
	return mux
}

// CSP allows the page its own script and style only: nothing inline,
// nothing from elsewhere, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// Snapshot is what GET /api/console serves: everything the page shows, as
// of Now. Times are RFC 3339; rates are per second.
type Snapshot struct {
	Now     time.Time `json:"now"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Top     Top       `json:"top"`
	Series  Series    `json:"series"`
	// Sources: per source and host (syslog) or account/container (Azure),
	// the last event received; Stale when older than StaleAfter.
	Sources    []SourceHost `json:"sources"`
	StaleAfter float64      `json:"stale_after_seconds"`
	Rules      Rules        `json:"rules"`
	// Alerts: the latest alerts in ALERTS, newest first (at most 200).
	Alerts       []AlertRow    `json:"alerts"`
	Destinations []Destination `json:"destinations"`
	DeadLetters  DeadLetters   `json:"dead_letters"`
	Pipeline     Pipeline      `json:"pipeline"`
}

// Top is the page's top row, and what `outpost status` prints first.
type Top struct {
	Ready     bool     `json:"ready"`
	Problems  []string `json:"problems,omitempty"`
	EventsIn  float64  `json:"events_in"`
	BytesIn   float64  `json:"bytes_in"`
	AlertsOut uint64   `json:"alerts_out"`
	BytesOut  uint64   `json:"bytes_out"`
	// Ratio is bytes in per byte out since start; 0 before anything went out.
	Ratio        float64 `json:"reduction_ratio"`
	StaleSources int     `json:"stale_sources"`
	Backlog      uint64  `json:"backlog_alerts"` // all destinations
	DeadLetters  float64 `json:"dead_letters"`   // since start
}

// Series are samples taken every Step seconds, oldest first, at most an
// hour of them. Times[i] is when sample i was taken (Unix seconds); each
// series has one value per time.
type Series struct {
	Step  float64 `json:"step_seconds"`
	Times []int64 `json:"times"`
	// EventsIn: events received per second, by "source/transport" (e.g.
	// "syslog/udp", "syslog/tls", "azure_blob/blob").
	EventsIn map[string][]float64 `json:"events_in"`
	// BytesInBy: bytes received per second, by the same keys.
	BytesInBy map[string][]float64 `json:"bytes_in_by"`
	BytesIn   []float64            `json:"bytes_in"`  // bytes/s, all sources
	BytesOut  []float64            `json:"bytes_out"` // bytes/s to the SIEM, all destinations
	Alerts    []float64            `json:"alerts"`    // alerts raised per second
	// Ratio is bytes in per byte out over each step (0 when nothing went out).
	Ratio []float64 `json:"ratio"`
}

// SourceHost is one sender seen by a source.
type SourceHost struct {
	Source    string    `json:"source"` // event source: syslog, azure.signin, ...
	Host      string    `json:"host"`
	LastEvent time.Time `json:"last_event"` // when its last event was received
	Events    uint64    `json:"events"`
	Stale     bool      `json:"stale"`
}

// Rules is the running rule set and what it did.
type Rules struct {
	Loaded     int        `json:"loaded"`
	LastReload *time.Time `json:"last_reload,omitempty"`
	// LastResult: "ok" or "rejected"; LastErrors the problems of a
	// rejected reload (the running set stayed).
	LastResult string    `json:"last_result,omitempty"`
	LastErrors []string  `json:"last_errors,omitempty"`
	PerRule    []RuleRow `json:"per_rule"`
}

// RuleRow is one rule's counts since start.
type RuleRow struct {
	ID       string  `json:"id"`
	Title    string  `json:"title"`
	Kind     string  `json:"kind"`
	Severity int     `json:"severity"`
	Matches  float64 `json:"matches"`
	Alerts   uint64  `json:"alerts"`
}

// AlertRow is one alert in the list; GET /alerts/{id} gives the whole alert
// (evidence event ids, window, steps, values, fields).
type AlertRow struct {
	ID       string    `json:"id"`
	Rule     string    `json:"rule"`
	Title    string    `json:"title"`
	Severity int       `json:"severity"` // 0-10 (CEF)
	Key      string    `json:"key,omitempty"`
	Count    int       `json:"count"`
	Time     time.Time `json:"time"` // the last event's time
}

// Destination is one SIEM destination's state.
type Destination struct {
	Name      string  `json:"name"`
	Address   string  `json:"address"`
	Transport string  `json:"transport"`
	Connected bool    `json:"connected"`
	AlertsOut uint64  `json:"alerts_out"`
	BytesOut  uint64  `json:"bytes_out"`
	Backlog   uint64  `json:"backlog_alerts"`
	OldestAge float64 `json:"oldest_backlog_seconds"` // age of the oldest alert waiting; 0 when none
	Failover  uint64  `json:"failover_alerts"`
	Errors    float64 `json:"errors"`
}

// DeadLetters are counts since start and the latest samples.
type DeadLetters struct {
	Counts []DeadCount  `json:"counts"`
	Latest []DeadLetter `json:"latest"` // newest first, at most 20
}

// DeadCount is the dead letters of one stage and reason class.
type DeadCount struct {
	Stage  string  `json:"stage"`
	Reason string  `json:"reason"`
	Count  float64 `json:"count"`
}

// DeadLetter is one sample, its raw input cut to 1 KiB and shown as text.
type DeadLetter struct {
	Time   time.Time `json:"time"`
	Stage  string    `json:"stage"`
	Reason string    `json:"reason"`
	Sender string    `json:"sender,omitempty"`
	Sample string    `json:"sample"`
}

// Pipeline is the stages' progress and the store's use.
type Pipeline struct {
	Stages  []Stage  `json:"stages"`
	Streams []Stream `json:"streams"`
	// BadgerBytes is the window state on disk; LiveKeys the live window keys.
	BadgerBytes float64 `json:"badger_bytes"`
	LiveKeys    float64 `json:"live_keys"`
	HeapBytes   float64 `json:"heap_bytes"`
	RSSBytes    float64 `json:"rss_bytes"`
	MemoryLimit float64 `json:"memory_limit_bytes"`
}

// Stage is one stage: its rate over the last step, its lag (messages
// waiting for it) and its watermark (event time it has reached).
type Stage struct {
	Name      string     `json:"name"` // ingest, filter, windows, forwarder
	Rate      float64    `json:"rate"`
	Lag       float64    `json:"lag"`
	Watermark *time.Time `json:"watermark,omitempty"`
}

// Stream is one JetStream stream against its limits.
type Stream struct {
	Name     string  `json:"name"`
	Msgs     uint64  `json:"msgs"`
	Bytes    uint64  `json:"bytes"`
	MaxBytes int64   `json:"max_bytes"`
	Use      float64 `json:"use"` // Bytes/MaxBytes, 0..1
}
