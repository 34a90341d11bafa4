package instrument

import (
	"sync"
	"time"
)

// LogLimiter keeps repeated problems from flooding the log: the first
// occurrence of each kind is logged, later ones at most once per interval,
// and that line carries how many occurred since the previous one. Kinds come
// from a fixed set, so its memory is bounded.
type LogLimiter struct {
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*limitState
}

type limitState struct {
	last    time.Time // when the last line for this kind was logged
	pending int       // occurrences since then, not yet logged
}

// NewLogLimiter returns a limiter that logs each kind at most once per every.
func NewLogLimiter(every time.Duration) *LogLimiter {
	return &LogLimiter{every: every, now: time.Now, kinds: make(map[string]*limitState)}
}

// Allow records one occurrence of kind. If a line may be logged now it
// returns true and the number of occurrences that line reports, this one
// included.
func (l *LogLimiter) Allow(kind string) (count int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.kinds[kind]
	if st == nil {
		l.kinds[kind] = &limitState{last: now}
		return 1, true
	}
	st.pending++
	if now.Sub(st.last) < l.every {
		return 0, false
	}
	count, st.pending, st.last = st.pending, 0, now
	return count, true
}

// Flush returns the occurrences of each kind not yet logged and forgets
// them, for a last line at shutdown.
func (l *LogLimiter) Flush() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int)
	for kind, st := range l.kinds {
		if st.pending > 0 {
			out[kind] = st.pending
			st.pending = 0
		}
	}
	return out
}
