package syslog

import (
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

var benchMessages = []struct {
	name, msg string
}{
	{"rfc5424", `<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry`},
	{"rfc3164", "<34>Oct 11 22:14:15 mymachine su[231]: 'su root' failed for lonvick on /dev/pts/8"},
	{"sshd", "<38>2024-10-11T22:14:15.123456+02:00 bastion sshd[4242]: Failed password for invalid user admin from 203.0.113.5 port 52114 ssh2"},
}

func BenchmarkParse(b *testing.B) {
	for _, bm := range benchMessages {
		b.Run(bm.name, func(b *testing.B) {
			p := NewParser()
			msg := []byte(bm.msg)
			var ev event.Event
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Parse(msg, testReceived, "192.0.2.10:514", &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// loopReader replays data forever, so one Framer serves any b.N.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

func BenchmarkFramer(b *testing.B) {
	msg := benchMessages[1].msg
	for _, bm := range []struct{ name, frame string }{
		{"octet", octet(msg)},
		{"lf", msg + "\n"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			f := NewFramer(&loopReader{data: []byte(strings.Repeat(bm.frame, 100))}, DefaultMaxMessageSize)
			b.SetBytes(int64(len(bm.frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
