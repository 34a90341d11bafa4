package syslog

import (
	"strings"
	"sync"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Joining the records of one audit event.
//
// auditd writes one syscall as several records sharing a serial: SYSCALL
// first (who: auid, exe, pid, success, the audit rule's key), then EXECVE
// (the arguments), CWD, PATH…, PROCTITLE, and EOE. Each record stays its own
// event, but an event is judged alone, so a rule on EXECVE would not know who
// ran the command. The joiner carries what the earlier records of a serial
// said into the later ones, in the order they are published (a connection's
// order, which is auditd's): an EXECVE event gets the SYSCALL's user,
// process, pid, outcome and key, and PATH and PROCTITLE get the command line
// too. attrs["audit_records"] lists the record types joined so far.
const (
	// auditJoinKeys bounds the serials remembered; the oldest go first.
	auditJoinKeys = 16384
	// auditJoinTTL: a serial not continued within it is forgotten (records
	// of one event are written together).
	auditJoinTTL = 10 * time.Second
)

type auditKey struct{ host, serial string }

// auditCtx is what the records of one serial said so far.
type auditCtx struct {
	user, process, pid, outcome, key, cmdline, records string
	seen                                               time.Time
}

type auditJoiner struct {
	mu   sync.Mutex
	m    map[auditKey]*auditCtx
	ring []auditKey // insertion order, for eviction
	next int
}

func newAuditJoiner() *auditJoiner {
	return &auditJoiner{m: make(map[auditKey]*auditCtx), ring: make([]auditKey, auditJoinKeys)}
}

// join fills ev from the earlier records of its serial and remembers what
// it adds. Events that are not audit records pass untouched.
func (j *auditJoiner) join(ev *event.Event) {
	serial := ev.Attrs["audit_serial"]
	if serial == "" {
		// EOE ("type=EOE msg=audit(t:serial): ") has too few pairs to be
		// read as key=value: recognised here.
		if serial = eoeSerial(ev.Message); serial == "" {
			return
		}
		ev.Set("audit_serial", serial)
		ev.Set(event.FieldEventCode, "EOE")
		ev.Category, ev.Action = "audit", "eoe"
	}
	typ := ev.Attrs[event.FieldEventCode]
	k := auditKey{ev.Host, serial}
	now := time.Now()

	j.mu.Lock()
	defer j.mu.Unlock()
	c := j.m[k]
	if c != nil && now.Sub(c.seen) > auditJoinTTL {
		c = nil // a serial reused after a reboot, or a stray record
	}
	if typ == "EOE" {
		delete(j.m, k)
		return
	}
	if c == nil {
		if typ != "SYSCALL" {
			return // only a SYSCALL starts what later records inherit
		}
		c = &auditCtx{}
		if old := j.ring[j.next]; old != (auditKey{}) && j.m[old] != nil {
			delete(j.m, old)
		}
		j.ring[j.next] = k
		j.next = (j.next + 1) % len(j.ring)
		j.m[k] = c
	} else {
		// Inherit: only what the record did not say itself.
		if ev.User == "" {
			ev.User = c.user
		}
		if ev.Outcome == "" {
			ev.Outcome = c.outcome
		}
		for _, f := range [][2]string{{event.FieldProcess, c.process}, {event.FieldProcessID, c.pid},
			{event.FieldCommandLine, c.cmdline}, {"audit_key", c.key}} {
			if ev.Attrs[f[0]] == "" {
				ev.Set(f[0], f[1])
			}
		}
		ev.Set("audit_records", c.records+","+typ)
	}
	c.seen = now
	switch typ {
	case "SYSCALL":
		c.user, c.outcome = ev.User, ev.Outcome
		c.process, c.pid = ev.Attrs[event.FieldProcess], ev.Attrs[event.FieldProcessID]
		c.key = trimQuotes(ev.Attrs["kv.key"])
		if c.key == "(null)" {
			c.key = ""
		}
		ev.Set("audit_key", c.key)
		c.records = "SYSCALL"
	case "EXECVE":
		c.cmdline = ev.Attrs[event.FieldCommandLine]
		c.records += ",EXECVE"
	default:
		c.records += "," + typ
	}
	if len(c.records) > 256 { // a long chain of PATH records
		c.records = c.records[:256]
	}
}

// eoeSerial returns the serial of an EOE record, or "".
func eoeSerial(msg string) string {
	rest, ok := strings.CutPrefix(msg, "type=EOE msg=audit(")
	if !ok {
		return ""
	}
	stamp, _, ok := strings.Cut(rest, ")")
	if !ok {
		return ""
	}
	_, serial, _ := strings.Cut(stamp, ":")
	return serial
}

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}
