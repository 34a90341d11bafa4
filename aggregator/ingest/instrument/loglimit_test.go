package instrument

import (
	"maps"
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLogLimiter(time.Minute)
	l.now = func() time.Time { return now }

	type step struct {
		after time.Duration // advance the clock first
		kind  string
		count int // 0: not logged
	}
	for i, s := range []step{
		{0, "oversize", 1}, // first of a kind: logged
		{0, "rfc5424", 1},  // kinds are independent
		{time.Second, "oversize", 0},
		{time.Second, "oversize", 0},
		{58 * time.Second, "oversize", 3}, // a minute after the last line: this and the two held back
		{time.Second, "oversize", 0},
		{time.Minute, "rfc5424", 1},
	} {
		now = now.Add(s.after)
		count, ok := l.Allow(s.kind)
		if ok != (s.count > 0) || count != s.count {
			t.Errorf("step %d: allow(%s) = %d, %v; want %d", i, s.kind, count, ok, s.count)
		}
	}
	if got, want := l.Flush(), map[string]int{"oversize": 1}; !maps.Equal(got, want) {
		t.Errorf("flush() = %v, want %v", got, want)
	}
	if got := l.Flush(); len(got) != 0 {
		t.Errorf("second flush() = %v, want nothing", got)
	}
}
