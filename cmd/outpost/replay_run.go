package main

import (
	"context"
	"hash/maphash"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/rules"
)

// replayLog runs rs over the syslog lines of in and calls emit with each
// alert, in the order one windows stage applying the matches in file order
// would raise them.
//
// The work is split as the appliance splits it, in stages joined by
// chunks of about 1,900 lines that travel in file order:
//
//   - the reader cuts the input into chunks of whole lines;
//   - workers (opts.Workers) parse chunks and evaluate the conditions, in
//     parallel, each chunk by one worker;
//   - the gate, in file order, does the rule filter's lateness check per
//     host and computes the windows' watermark after each event;
//   - shards (as many as workers) apply the window logic, each to the group
//     keys that hash to it (as MATCHES is partitioned by rule and key) and
//     each over every chunk in file order, so every key sees its matches in
//     order;
//   - this goroutine merges each chunk's alerts from the shards in the
//     order a single windows stage would have raised them, and emits them.
func replayLog(ctx context.Context, in io.Reader, rs []*rules.Rule, opts replayOptions, emit func(*event.Alert) error) (*replayStats, error) {
	workers := max(opts.Workers, 1)
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	lateness := engine.DefaultLateness() // the windows stage's defaults, as rules test uses them

	// At most chunks buffers exist: each is read into, parsed, gated,
	// applied, emitted and handed back, which bounds memory whatever the
	// input's size. Every channel holds them all, so no send blocks.
	nshards := workers
	chunks := 3*workers + 4
	free := make(chan *replayChunk, chunks)
	for range chunks {
		free <- newReplayChunk(len(rs), nshards)
	}
	work := make(chan *replayChunk, chunks)
	order := make(chan *replayChunk, chunks)
	emitq := make(chan *replayChunk, chunks)
	shardq := make([]chan *replayChunk, nshards)
	// One seed: a worker hashes each group key to pick its shard, and the
	// shard's store finds its state by that hash.
	seed := maphash.MakeSeed()
	shards := make([]*replayShard, nshards)
	for i := range shards {
		shardq[i] = make(chan *replayChunk, chunks)
		shards[i] = newReplayShard(i, rs, lateness, seed)
	}

	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	wg.Go(func() { readErr <- readChunks(ctx, in, free, work, order) })
	for range workers {
		w := &replayWorker{
			rules: rs, parser: syslog.NewParser(syslog.WithLocation(loc), syslog.WithoutIDs()), received: opts.Received, events: opts.Events,
			seed: seed, shards: nshards,
		}
		wg.Go(func() {
			for c := range work {
				w.parse(c)
				c.parsed <- struct{}{}
			}
		})
	}
	gate := &replayGate{Gate: engine.NewGate(lateness), wm: engine.NewWatermark(lateness.AllowedLateness, 0, nil)}
	wg.Go(func() {
		defer close(emitq)
		defer func() {
			for _, q := range shardq {
				close(q)
			}
		}()
		for c := range order {
			<-c.parsed
			gate.check(c)
			for _, q := range shardq {
				q <- c
			}
			emitq <- c
		}
	})
	for i, sh := range shards {
		wg.Go(func() {
			for c := range shardq[i] {
				sh.apply(c)
				c.applied <- struct{}{}
			}
		})
	}

	st := &replayStats{Rules: make([]replayRuleStats, len(rs))}
	raise := func(alerts []taggedAlert) error {
		slices.SortFunc(alerts, compareTagged)
		for _, ta := range alerts {
			st.Alerts++
			st.Rules[ta.rule].Alerts++
			if err := emit(ta.alert); err != nil {
				return err
			}
		}
		return nil
	}
	var merged []taggedAlert
	err := func() error {
		for c := range emitq {
			for range nshards {
				<-c.applied
			}
			st.add(c)
			merged = merged[:0]
			for i := range c.alerts {
				merged = append(merged, c.alerts[i]...)
			}
			if err := raise(merged); err != nil {
				return err
			}
			free <- c
		}
		if err := <-readErr; err != nil {
			return err
		}
		// The input is done and the shards are idle: fire what the
		// watermark passes at the end, as rules/ruletest does after a
		// test's events.
		wm := gate.wm.Advanced(opts.Advance)
		if wm == 0 {
			return nil
		}
		merged = merged[:0]
		for _, sh := range shards {
			merged = sh.expire(merged, wm, -1)
		}
		return raise(merged)
	}()
	cancel()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	st.Late = gate.Late
	for _, sh := range shards {
		for i, n := range sh.counts {
			st.Matches += n.matches
			st.Rules[i].Matches += n.matches
			st.Rules[i].Suppressed += n.suppressed
		}
	}
	return st, nil
}

// add counts a chunk's lines, events and what its worker saw per rule.
func (st *replayStats) add(c *replayChunk) {
	st.Lines += c.lines
	st.Unparsed += c.unparsed
	st.Events += len(c.events)
	for i := range st.Rules {
		rs := &st.Rules[i]
		rs.NoKey += c.noKey[i]
		if e := c.evalErrs[i]; e.n > 0 {
			if rs.EvalErrors += e.n; rs.FirstEvalError == nil {
				rs.FirstEvalError = e.first
			}
		}
	}
}

// replayChunk is a run of whole lines and what each stage made of them.
type replayChunk struct {
	data      []byte
	firstLine int // number of the first line of data, from 1
	lines     int // in data
	unparsed  int
	events    []event.Event
	matches   []replayMatch // in event order, then rule order
	noKey     []int         // per rule
	evalErrs  []evalError   // per rule
	// watermarks holds, per event, the watermark after it (the newest
	// event time so far minus the allowed lateness): where deadlines are
	// checked, after the event's matches. It is lateEvent for a late event.
	watermarks []int64
	alerts     [][]taggedAlert // per shard
	parsed     chan struct{}   // a worker is done with the chunk
	applied    chan struct{}   // a shard is done with the chunk, one per shard
}

func newReplayChunk(rules, shards int) *replayChunk {
	const lines = replayChunkSize / 128 // a chunk of typical lines, at first
	return &replayChunk{
		events:   make([]event.Event, 0, lines),
		matches:  make([]replayMatch, 0, lines),
		noKey:    make([]int, rules),
		evalErrs: make([]evalError, rules),
		alerts:   make([][]taggedAlert, shards),
		parsed:   make(chan struct{}, 1),
		applied:  make(chan struct{}, shards),
	}
}

type replayMatch struct {
	event int32  // index in events
	rule  int32  // index in the rules replayed
	shard int32  // the shard that owns (rule, key)
	hash  uint64 // of the key, which picks the shard and finds the state in it
	hit   rules.Hit
}

type evalError struct {
	n     int
	first error
}

// readChunks cuts in into chunks of whole lines and hands each to the
// workers and, in the same order, to the gate.
