package engine

import (
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Lateness is how far out of order events may arrive and still count. The
// engine enforces it in three places: the Gate drops an event more than
// LatenessFor(its source) behind its host's newest; the Watermark holds
// back by AllowedLateness, so absence deadlines wait for stragglers; and
// Apply keeps events in a window's state MaxLateness past the window, so a
// straggler can still complete it.
//
// It is part of the `windows` section of outpost.yaml (inlined there).
type Lateness struct {
	// AllowedLateness is how far behind the newest event of its host an
	// event may arrive and still count; older events are counted and
	// dead-lettered. It also holds the watermark back, and keeps events in
	// a window's state this long past the window.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// SourceLateness overrides AllowedLateness per event source; a key
	// ending in ".*" matches every source with that prefix. Default:
	// {"azure.*": 2h}, because Azure files its exports by receive time and
	// a blob can carry records an hour old.
	SourceLateness map[string]time.Duration `yaml:"source_lateness"`
}

// DefaultLateness is the lateness the engine runs with when nothing is
// configured: what `rules test` and `rules replay` use.
func DefaultLateness() Lateness {
	var l Lateness
	l.Validate(nil)
	return l
}

// Validate applies defaults and records problems in errs (nil: only the
// defaults), their paths relative to the section Lateness is inlined in.
func (l *Lateness) Validate(errs *config.Errors) {
	if l.AllowedLateness == 0 {
		l.AllowedLateness = 2 * time.Minute
	}
	if l.SourceLateness == nil {
		l.SourceLateness = map[string]time.Duration{"azure.*": 2 * time.Hour}
	}
	if errs == nil {
		return
	}
	if l.AllowedLateness < 0 {
		errs.Add("allowed_lateness", "must not be negative, got %s", l.AllowedLateness)
	}
	for k, d := range l.SourceLateness {
		if d < 0 {
			errs.Add("source_lateness."+k, "must not be negative, got %s", d)
		}
	}
}

// LatenessFor returns the allowed lateness of events from source.
func (l *Lateness) LatenessFor(source string) time.Duration {
	if d, ok := l.SourceLateness[source]; ok {
		return d
	}
	best, d := -1, l.AllowedLateness
	for k, v := range l.SourceLateness {
		if prefix, ok := strings.CutSuffix(k, "*"); ok && strings.HasPrefix(source, prefix) && len(prefix) > best {
			best, d = len(prefix), v
		}
	}
	return d
}

// MaxLateness is the largest allowed lateness of any source: how long an
// event stays in a window's state past the window.
func (l *Lateness) MaxLateness() time.Duration {
	d := l.AllowedLateness
	for _, v := range l.SourceLateness {
		d = max(d, v)
	}
	return d
}
