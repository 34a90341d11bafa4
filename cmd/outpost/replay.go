package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/rules"
)

// replaySender is the Event.Sender of replayed lines.
const replaySender = "replay"

// replayChunkSize is how much input one worker takes at a time: about 1,900
// sshd lines, so handing chunks between goroutines costs nothing per line,
// and the few chunks in flight (with their events, about 1 MiB each) stay
// a small part of the heap.
const replayChunkSize = 256 << 10

// replayGCPercent is the GOGC replay runs with unless GOGC is set.
const replayGCPercent = 400

func newReplayCmd() *cobra.Command {
	var (
		input, format, timezone, received, cpuProfile string
		ruleIDs                                       []string
		workers                                       int
		advance                                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay [DIR] --input FILE",
		Short: "Run the rules over a file of syslog lines and print the alerts they would have raised",
		Long: `replay reads FILE (- for stdin), one syslog message per line, RFC 5424 or
RFC 3164, parses each line as the syslog source does, and runs the rules
(DIR, default the shipped pack; --rule to pick some) over the events as the
appliance does: the rule filter's lateness check and each rule's condition,
then the window logic per rule and group key, in event time, in file order.
It prints the alerts (--format json: one alert per line, as published to
ALERTS; summary: counts by rule) and ends with a report on stderr:

  replay: lines=N events=N unparsed=N late=N matches=N alerts=N seconds=S lines_per_s=R

A line without a PRI, as in a log file (/var/log/auth.log, rsyslog's file
formats), is read as if sent with <13> (user.notice, what RFC 3164 assumes),
so its timestamp, host and tag are parsed. Event ids are line numbers, so an alert's event_ids name the lines that made
it fire, and replaying a file again gives the same alert ids. Lines the
syslog source would dead-letter (RFC 5424 it cannot parse, over 64KiB) are
unparsed; an event more than 2m (windows.allowed_lateness) behind the newest
event of its host is late and not evaluated. Absence deadlines fire as the
watermark (the newest match time minus 2m) passes them; at the end of the
input it moves on by --advance. Window state stays in memory for the whole
replay: no state TTL, no windows.max_keys_per_rule.

replay runs with GOGC=400 unless GOGC is set: parsing makes garbage fast.`,
		Example: `  outpost rules replay --input /var/log/auth.log --format summary
  outpost rules replay ./rules --input lines.txt --rule ssh-brute-force | jq .key
  zcat syslog.1.gz | outpost rules replay --input - --received 2026-01-01T00:00:00Z`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case format != "json" && format != "summary":
				return fmt.Errorf("--format: want json or summary, got %q", format)
			case workers < 1:
				return fmt.Errorf("--workers: want at least 1, got %d", workers)
			case advance < 0:
				return fmt.Errorf("--advance: must not be negative, got %s", advance)
			}
			opts := replayOptions{Workers: workers, Advance: advance, Received: time.Now()}
			var err error
			if opts.Location, err = time.LoadLocation(timezone); err != nil {
				return fmt.Errorf("--timezone: %q is not an IANA time zone: %w", timezone, err)
			}
			if received != "" {
				if opts.Received, err = time.Parse(time.RFC3339, received); err != nil {
					return fmt.Errorf("--received: want an RFC 3339 time: %w", err)
				}
			}
			set, err := loadRuleSet(args)
			if err != nil {
				return err
			}
			rs, err := selectRules(set, ruleIDs)
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if input != "-" {
				f, err := os.Open(input)
				if err != nil {
					return fmt.Errorf("opening input: %w", err)
				}
				defer f.Close()
				in = f
			}
			if os.Getenv("GOGC") == "" {
				// Parsing and conditions allocate about 500 bytes a line
				// that die at once: with GOGC=100 and a live heap of a few
				// MB the collector runs every 30 ms and costs a fifth of
				// the CPU. Heap for speed is the better trade for a batch job.
				defer debug.SetGCPercent(debug.SetGCPercent(replayGCPercent))
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			return runReplay(cmd.Context(), in, cmd.OutOrStdout(), cmd.ErrOrStderr(), rs, format, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "file of syslog messages, one per line (- for stdin)")
	f.StringArrayVar(&ruleIDs, "rule", nil, "run only this rule (repeat for more); default every enabled rule")
	f.StringVar(&format, "format", "json", "json (one alert per line) or summary (counts by rule)")
	f.IntVar(&workers, "workers", runtime.GOMAXPROCS(0), "goroutines parsing lines and evaluating conditions, and as many applying the window logic (each to its share of the group keys)")
	f.StringVar(&timezone, "timezone", "UTC", "IANA zone RFC 3164 timestamps are read in (as ingest.syslog.timezone)")
	f.StringVar(&received, "received", "", "reception time given to every line (RFC 3339; default now): the year of RFC 3164 timestamps, the time of lines without one, and the time no watermark passes")
	f.DurationVar(&advance, "advance", 0, "move the watermark this far past the last event at the end (absence rules)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the replay to this file")
	_ = f.MarkHidden("cpuprofile")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func loadRuleSet(args []string) (*rules.Set, error) {
	if len(args) == 0 {
		return rules.Pack()
	}
	return rules.LoadDir(args[0])
}

// selectRules returns the rules named by ids, in the set's order (the order
// the rule filter evaluates them in), or every rule when ids is empty.
func selectRules(set *rules.Set, ids []string) ([]*rules.Rule, error) {
	if len(ids) == 0 {
		return set.Rules, nil
	}
	want := map[string]bool{}
	var unknown []string
	for _, id := range ids {
		if set.Rule(id) == nil {
			unknown = append(unknown, id)
		}
		want[id] = true
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("--rule: no enabled rule %s in the set", strings.Join(unknown, ", "))
	}
	var rs []*rules.Rule
	for _, r := range set.Rules {
		if want[r.ID] {
			rs = append(rs, r)
		}
	}
	return rs, nil
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runReplay replays in and writes the alerts (json) or the counts
// (summary) to out and the report to report.
func runReplay(ctx context.Context, in io.Reader, out, report io.Writer, rs []*rules.Rule, format string, opts replayOptions) error {
	start := time.Now()
	bw := bufio.NewWriterSize(out, 64<<10)
	emit := func(*event.Alert) error { return nil }
	if format == "json" {
		emit = func(a *event.Alert) error {
			data, err := json.Marshal(a)
			if err != nil {
				return err
			}
			bw.Write(data)
			return bw.WriteByte('\n')
		}
	}
	st, err := replayLog(ctx, in, rs, opts, emit)
	if err != nil {
		return err
	}
	if format == "summary" {
		writeReplaySummary(bw, rs, st)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing alerts: %w", err)
	}
	secs := time.Since(start).Seconds()
	for i, r := range rs {
		if n := st.Rules[i].EvalErrors; n > 0 {
			fmt.Fprintf(report, "replay: rule %s: condition failed at run time on %d events, treated as no match (first: %v)\n", r.ID, n, st.Rules[i].FirstEvalError)
		}
	}
	fmt.Fprintf(report, "replay: lines=%d events=%d unparsed=%d late=%d matches=%d alerts=%d seconds=%.3f lines_per_s=%.0f\n",
		st.Lines, st.Events, st.Unparsed, st.Late, st.Matches, st.Alerts, secs, float64(st.Lines)/secs)
	return nil
}

func writeReplaySummary(w io.Writer, rs []*rules.Rule, st *replayStats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tKIND\tMATCHES\tNO_KEY\tSUPPRESSED\tALERTS")
	for i, r := range rs {
		s := st.Rules[i]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", r.ID, r.Kind, s.Matches, s.NoKey, s.Suppressed, s.Alerts)
	}
	tw.Flush()
}

// replayOptions configure replayLog.
type replayOptions struct {
	Workers  int            // parsing goroutines, and window shards; < 1 means 1
	Location *time.Location // zone of RFC 3164 timestamps; nil means UTC
	// Received is every line's reception time: RFC 3164 timestamps take
	// their year from it, lines without a timestamp their time.
	Received time.Time
	// Advance moves the watermark past the last match at the end, so
	// absence deadlines after the input can fire (a test's `advance`).
	Advance time.Duration
}

// replayStats counts what a replay saw. Lines = Events + Unparsed + empty
// lines; Late events are among Events.
type replayStats struct {
	Lines, Events, Unparsed, Late, Matches, Alerts int
	Rules                                          []replayRuleStats // per rule, in the order given
}

type replayRuleStats struct {
	Matches, NoKey, Suppressed, Alerts int
	EvalErrors                         int
	FirstEvalError                     error
}

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
	shards := make([]*replayShard, nshards)
	for i := range shards {
		shardq[i] = make(chan *replayChunk, chunks)
		shards[i] = newReplayShard(i, rs, lateness)
	}

	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	wg.Go(func() { readErr <- readChunks(ctx, in, free, work, order) })
	seed := maphash.MakeSeed()
	for range workers {
		w := &replayWorker{
			rules: rs, parser: syslog.NewParser(syslog.WithLocation(loc), syslog.WithoutIDs()), received: opts.Received,
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
	// watermarks holds, per event that matched, the windows' watermark
	// after it (the newest match time so far minus the allowed lateness):
	// where the windows stage would check absence deadlines. It is
	// lateEvent for a late event.
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
func readChunks(ctx context.Context, in io.Reader, free <-chan *replayChunk, work, order chan<- *replayChunk) error {
	defer close(work)
	defer close(order)
	var carry []byte // the start of a line the last chunk cut
	line := 1
	for {
		var c *replayChunk
		select {
		case c = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		buf := c.data[:0]
		if cap(buf) < replayChunkSize+len(carry) {
			buf = make([]byte, 0, replayChunkSize+len(carry))
		}
		buf = append(buf, carry...)
		eof := false
		for !eof {
			n, err := io.ReadFull(in, buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				eof = true
			case err != nil:
				return fmt.Errorf("reading input: %w", err)
			}
			if eof || bytes.IndexByte(buf[len(buf)-n:], '\n') >= 0 {
				break
			}
			buf = slices.Grow(buf, len(buf)) // a line longer than the buffer
		}
		end := len(buf)
		if !eof {
			end = bytes.LastIndexByte(buf, '\n') + 1
		}
		// carry must not alias buf, which a worker reads while the next
		// chunk is being filled.
		carry = append(carry[:0], buf[end:]...)
		c.data, c.firstLine = buf[:end], line
		c.lines = bytes.Count(c.data, []byte{'\n'})
		if end > 0 && buf[end-1] != '\n' {
			c.lines++ // the last line, unterminated
		}
		line += c.lines
		if len(c.data) > 0 {
			order <- c
			work <- c
		}
		if eof {
			return nil
		}
	}
}

// replayWorker parses lines and evaluates the rules' conditions, as the
// syslog source and the rule filter do. One per goroutine.
type replayWorker struct {
	rules    []*rules.Rule
	parser   *syslog.Parser
	received time.Time
	seed     maphash.Seed
	shards   int
	eval     engine.Evaluator
	ids      []byte
	idEnds   []int
	line     []byte
}

func (w *replayWorker) parse(c *replayChunk) {
	c.unparsed = 0
	c.events, c.matches = c.events[:0], c.matches[:0]
	clear(c.noKey)
	clear(c.evalErrs)
	// Event ids are line numbers. They are cut from one string per chunk,
	// which saves an allocation per line; an id a window keeps keeps that
	// string (about 7 bytes a line) alive.
	w.ids, w.idEnds = w.ids[:0], w.idEnds[:0]
	for i := range c.lines {
		w.ids = strconv.AppendInt(w.ids, int64(c.firstLine+i), 10)
		w.idEnds = append(w.idEnds, len(w.ids))
	}
	ids := string(w.ids)
	data := c.data
	for i := 0; len(data) > 0; i++ {
		line := data
		if j := bytes.IndexByte(data, '\n'); j >= 0 {
			line, data = data[:j], data[j+1:]
		} else {
			data = nil
		}
		line = trimLineEnd(line)
		if len(line) == 0 {
			continue // the syslog source skips empty frames
		}
		if len(line) > syslog.DefaultMaxMessageSize {
			c.unparsed++ // the source would dead-letter it as oversize
			continue
		}
		if line[0] != '<' {
			// A log file's line (rsyslog, /var/log/auth.log) has no PRI.
			// The one RFC 3164 assumes then, user.notice, lets its
			// header be read as the sender's would have been.
			w.line = append(append(w.line[:0], "<13>"...), line...)
			line = w.line
		}
		if len(c.events) < cap(c.events) {
			c.events = c.events[:len(c.events)+1] // Parse overwrites all of it
		} else {
			c.events = append(c.events, event.Event{})
		}
		ev := &c.events[len(c.events)-1]
		if err := w.parser.Parse(line, w.received, replaySender, ev); err != nil {
			c.unparsed++
			c.events = c.events[:len(c.events)-1]
			continue
		}
		start := 0
		if i > 0 {
			start = w.idEnds[i-1]
		}
		ev.ID = ids[start:w.idEnds[i]]
		idx := int32(len(c.events) - 1)
		for ri, r := range w.rules {
			hits, noKey, err := w.eval.Hits(r, ev)
			if err != nil {
				e := &c.evalErrs[ri]
				if e.n++; e.first == nil {
					e.first = fmt.Errorf("line %s: %w", ev.ID, err)
				}
				continue
			}
			c.noKey[ri] += noKey
			for _, h := range hits {
				hash := maphash.String(w.seed, h.Key)
				c.matches = append(c.matches, replayMatch{
					event: idx, rule: int32(ri), shard: int32(hash % uint64(w.shards)), hash: hash, hit: h,
				})
			}
		}
	}
}

// trimLineEnd strips the CR and NUL bytes senders leave at the end of a
// line, as the syslog source strips a frame's trailer.
func trimLineEnd(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\r' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}

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
		if n > 0 {
			// Every match of ev is placed at its SeenTime (Match.At).
			g.wm.Observe(ev.SeenTime().UnixNano())
			c.watermarks[i] = g.wm.At()
		}
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

func newReplayShard(id int, rs []*rules.Rule, l engine.Lateness) *replayShard {
	sh := &replayShard{
		id: int32(id), rules: rs, index: make(map[string]int32, len(rs)),
		windows: engine.NewWindows(l), store: engine.NewMemStore(),
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
	if r.Kind == rules.KindAbsence {
		// An absence alert is raised from the state, later: the state keeps
		// the fields of the event the silence is counted from.
		sh.match.Fields = r.CarriedFields(ev)
	}
	res, _ := sh.windows.Apply(sh.store, r, &sh.match) // a MemStore never fails
	if res.Verdict == engine.Suppressed {
		sh.counts[pm.rule].suppressed++
	}
	a := res.Alert
	if a != nil && r.Kind != rules.KindAbsence {
		// The match carried no fields: they are taken from the event only
		// for the alerts, the same fields the rule filter would have put
		// in every match. (An absence alert has those of the event before
		// the silence, from the state.)
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
