// Package engine is Outpost's correlation engine, free of any transport:
// the JetStream stages (aggregator/filter, aggregator/window), `outpost
// rules test` (rules/ruletest) and `outpost rules replay` all drive this
// code, so what a rule test or a replay shows is what the appliance does.
// A differential test (cmd/outpost: TestOneEngine) holds them to it.
//
// # The model
//
// Event time. Every comparison is in event time, never processing time.
// An event is placed at its SeenTime: its own time, or its reception if
// that is earlier, so a sender cannot move time for others by stamping
// ahead (a Match carries both; Match.At is where the windows place it).
//
// Lateness (Lateness, the `windows` section of outpost.yaml). An event more
// than LatenessFor(its source) behind the newest event of its (source,
// host) is late: the Gate refuses it and the driver counts and
// dead-letters it. Per host, so one sender's fast clock cannot make the
// others late; at most MaxHostWatermarks hosts are tracked.
//
// Evaluation (Evaluator). Each admitted event runs through every rule's
// guards and condition; each satisfied step with its group key set is a
// Match (NewMatch): rule, key, time, event id, step, value and the fields
// the rule carries. A Coalescer may thin the matches of an absence rule
// without `expect` per batch, leaving Apply where every match would.
//
// The watermark (Watermark). The newest match time seen minus
// AllowedLateness: the event time up to which the input is taken as
// complete. With idle advance (the live stage), once no newer match came
// for IdleAdvance of the injected clock, it follows that clock minus the
// lateness. It never moves back.
//
// Windows (State, Apply, Expire, Windows). Each (rule, group key) has one
// State. Apply adds a match to it and returns the alert the rule's
// condition now calls for, if any; it is deterministic and idempotent: a
// redelivered match is a Duplicate, the same matches in the same order
// give the same alerts, and alert ids derive from (rule, key, window start,
// event or value), so a replay after a crash produces the same ids.
// Threshold, distinct and sequence alerts fire as soon as they hold.
//
// Deadlines. An absence rule's state holds a deadline; when the watermark
// passes it, Expire raises the silence (Windows.FireDue finds the due ones
// through the store's deadline index). A match that arrives after a passed
// deadline reports that silence itself, with the id Expire gives it, so
// when the driver checks deadlines does not change which alerts are
// raised.
//
// # The store contract
//
// Windows reads and changes states through a Txn, one per batch (see
// Txn): MemStore keeps them in memory for `rules test` and `rules replay`;
// the windows stage's Badger store (aggregator/window) adds an LRU cache,
// TTLs, a key cap, and commit layers that make a batch's states durable
// only after the alerts it raised were acked — the stage's crash-safety
// contract, stated at the top of aggregator/window.
package engine
