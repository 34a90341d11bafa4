package syslog

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

var benchMessages = []struct {
	name, msg string
}{
	{"rfc5424", `<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry`},
	{"rfc3164", "<34>Oct 11 22:14:15 mymachine su[231]: 'su root' failed for lonvick on /dev/pts/8"},
	{"sshd", "<38>2024-10-11T22:14:15.123456+02:00 bastion sshd[4242]: Failed password for invalid user admin from 203.0.113.5 port 52114 ssh2"},
	// The line kinds of bench/loadgen's realistic and formats mixes.
	{"ufw", "<4>2026-11-23T10:00:00Z web-03 kernel: [UFW BLOCK] IN=eth0 OUT= SRC=198.51.100.23 DST=10.20.0.4 LEN=60 PROTO=TCP SPT=40512 DPT=443"},
	{"cef", `<134>1 2026-11-23T10:00:00Z fw-edge-01 - - - - CEF:0|Palo Alto Networks|PAN-OS|11.1.0|end|TRAFFIC|3|src=198.51.100.23 spt=40512 dst=10.20.1.10 dpt=443 proto=tcp act=allow cs1Label=Rule cs1=allow-web app=ssl in=4980 out=3201`},
	{"leef", "<134>1 2026-11-23T10:00:00Z qradar-relay - - - - LEEF:1.0|Lancope|StealthWatch|7.4|flow|src=198.51.100.23\tdst=10.20.0.5\tsrcPort=40512\tdstPort=443\tproto=TCP\tusrName=alice"},
	{"kv", `<134>1 2026-11-23T10:00:00Z fgt-01 - - - - date=2026-11-23 time=10:00:00 devname="FGT-EDGE-01" logid="0000000013" type="traffic" subtype="forward" srcip=198.51.100.23 srcport=40512 dstip=10.20.0.6 dstport=443 proto=6 action="accept" policyname="allow-web" service="HTTPS" sentbyte=1200 rcvdbyte=4800`},
	{"nxlog-sd", `<134>1 2026-11-23T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4624" Channel="Security" TargetUserName="alice" IpAddress="198.51.100.23" IpPort="40512" LogonType="3"] An account was successfully logged on.`},
	{"nxlog-json", `<134>1 2026-11-23T10:00:00Z ws-07 nxlog - - - {"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Image":"C:\\Windows\\System32\\svchost.exe","CommandLine":"svchost.exe -k netsvcs","ParentImage":"C:\\Windows\\System32\\services.exe","User":"NT AUTHORITY\\SYSTEM","ProcessId":"4242"}`},
}

// BenchmarkParse parses each message as `rules replay` does (every
// attribute kept) and, under "read/", as the source does with the shipped
// pack loaded (ingest.syslog.attributes: read).
func BenchmarkParse(b *testing.B) {
	set, err := rules.Pack()
	if err != nil {
		b.Fatal(err)
	}
	var read atomic.Pointer[attrFilter]
	keys, all := set.Attributes()
	if all {
		b.Fatal("the shipped pack reads attributes by computed keys")
	}
	read.Store(newAttrFilter(keys))
	for _, bm := range benchMessages {
		b.Run(bm.name, func(b *testing.B) { benchParse(b, bm.msg, nil) })
	}
	for _, bm := range benchMessages {
		b.Run("read/"+bm.name, func(b *testing.B) { benchParse(b, bm.msg, &read) })
	}
}

func benchParse(b *testing.B, msg string, attrs *atomic.Pointer[attrFilter]) {
	p := NewParser()
	p.attrs = attrs
	p.reuseAttrs = attrs != nil // as the source parses
	raw := []byte(msg)
	var ev event.Event
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Parse(raw, testReceived, "192.0.2.10:514", &ev); err != nil {
			b.Fatal(err)
		}
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
