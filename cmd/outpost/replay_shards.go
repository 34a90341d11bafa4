package main

import (
	"cmp"
	"hash/maphash"
	"math"
	"slices"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// replayGate is the engine's lateness gate and the windows' watermark, in
// file order.
type replayGate struct {
	*engine.Gate
	wm *engine.Watermark
}

// lateEvent marks a late event in replayChunk.watermarks.
const lateEvent = math.MinInt64

func (g *replayGate) check(c *replayChunk) {
	c.watermarks = slices.Grow(c.watermarks[:0], len(c.events))[:len(c.events)]
	ms := c.matches
	for i := range c.events {
		ev := &c.events[i]
		n := 0
		for n < len(ms) && ms[n].event == int32(i) {
			n++
		}
		ms = ms[n:]
		if !g.Admit(ev) {
			c.watermarks[i] = lateEvent
			continue
		}
		g.wm.Observe(g.Newest())
		c.watermarks[i] = g.wm.At()
	}
}

// replayShard is the windows stage for its share of the group keys: the
// engine's window logic over an in-memory store.
type replayShard struct {
	id      int32
	rules   []*rules.Rule
	index   map[string]int32 // rule id -> index in rules
	windows *engine.Windows
	store   *engine.MemStore
	counts  []struct{ matches, suppressed int } // per rule
	match   event.Match                         // reused: Apply keeps no pointer to it
}

func newReplayShard(id int, rs []*rules.Rule, l engine.Lateness, seed maphash.Seed) *replayShard {
	sh := &replayShard{
		id: int32(id), rules: rs, index: make(map[string]int32, len(rs)),
		windows: engine.NewWindows(l), store: engine.NewMemStoreSeeded(seed),
		counts: make([]struct{ matches, suppressed int }, len(rs)),
	}
	for i, r := range rs {
		sh.index[r.ID] = int32(i)
	}
	return sh
}

func (sh *replayShard) rule(id string) *rules.Rule {
	if i, ok := sh.index[id]; ok {
		return sh.rules[i]
	}
	return nil
}

// taggedAlert is an alert with where in its chunk the windows stage would
// have raised it: at a match, or by a deadline the watermark passed after
// an event's matches.
type taggedAlert struct {
	event int32 // index in the chunk's events; -1 at the end of the input
	match int32 // index in the chunk's matches; MaxInt32 for a deadline
	at    int64 // a deadline's time
	rule  int32
	alert *event.Alert
}

func compareTagged(a, b taggedAlert) int {
	if c := cmp.Compare(a.event, b.event); c != 0 {
		return c
	}
	if c := cmp.Compare(a.match, b.match); c != 0 {
		return c
	}
	if c := cmp.Compare(a.at, b.at); c != 0 {
		return c
	}
	if c := cmp.Compare(a.rule, b.rule); c != 0 {
		return c
	}
	return strings.Compare(a.alert.Key, b.alert.Key)
}

// apply runs the window logic over this shard's matches of one chunk, in
// file order, and checks its deadlines wherever the windows stage would.
func (sh *replayShard) apply(c *replayChunk) {
	out := c.alerts[sh.id][:0]
	for j := 0; j < len(c.matches); {
		i := c.matches[j].event
		end := j
		for end < len(c.matches) && c.matches[end].event == i {
			end++
		}
		wm := c.watermarks[i]
		if wm == lateEvent {
			j = end
			continue
		}
		ev := &c.events[i]
		for ; j < end; j++ {
			if pm := &c.matches[j]; pm.shard == sh.id {
				if a := sh.applyMatch(ev, pm); a != nil {
					out = append(out, taggedAlert{event: i, match: int32(j), rule: pm.rule, alert: a})
				}
			}
		}
		if next := sh.store.NextDeadline(); next != 0 && next < wm {
			out = sh.expire(out, wm, i)
		}
	}
	c.alerts[sh.id] = out
}

func (sh *replayShard) applyMatch(ev *event.Event, pm *replayMatch) *event.Alert {
	r := sh.rules[pm.rule]
	sh.counts[pm.rule].matches++
	sh.match = event.Match{RuleID: r.ID, Key: pm.hit.Key, Time: ev.Time, Seen: ev.SeenTime(), EventID: ev.ID, Step: pm.hit.Step, Value: pm.hit.Value}
	if engine.FromState(r) {
		// An absence alert (or an at_most window's) is raised from the
		// state, later: the state keeps the fields of the event the
		// silence (the window) is counted from.
		sh.match.Fields = r.CarriedFields(ev)
	}
	sh.store.Hint(pm.hit.Key, pm.hash)
	res, _ := sh.windows.Apply(sh.store, r, &sh.match) // a MemStore never fails
	if res.Verdict == engine.Suppressed {
		sh.counts[pm.rule].suppressed++
	}
	a := res.Alert
	if a != nil && !engine.FromState(r) {
		// The match carried no fields: they are taken from the event only
		// for the alerts, the same fields the rule filter would have put
		// in every match. (An absence alert has those of the event before
		// the silence, from the state; an at_most alert its window's first.)
		a.Fields, a.CEF = r.AlertFields(r.CarriedFields(ev))
	}
	return a
}

// expire fires the absence deadlines before the watermark wm, as the
// windows stage's timers do, tagged as raised after event i.
func (sh *replayShard) expire(out []taggedAlert, wm int64, i int32) []taggedAlert {
	_, _ = sh.windows.FireDue(sh.store, sh.rule, wm, 0, func(r *rules.Rule, d engine.Deadline, a *event.Alert, v engine.Verdict) {
		ri := sh.index[r.ID]
		if v == engine.Suppressed {
			sh.counts[ri].suppressed++
		}
		if a != nil {
			out = append(out, taggedAlert{event: i, match: math.MaxInt32, at: d.At, rule: ri, alert: a})
		}
	})
	return out
}
