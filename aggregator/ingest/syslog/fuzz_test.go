package syslog

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/influxdata/go-syslog/v3/rfc5424"

	"github.com/outpost-siem/outpost/aggregator/event"
)

var parseSeeds = []string{
	// Windows, Linux services and structured formats (windows.go, linux.go, package payload).
	`<86>1 2026-12-04T10:00:00Z ws-17 Microsoft-Windows-Security-Auditing 4 - [NXLOG@14506 EventID="4688" NewProcessName="C:\\x.exe" NewProcessId="0x1a"] x`,
	`<14>1 2026-12-04T10:00:00Z ws-17 nxlog - - - {"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Image":"C:\\a.exe"}`,
	`<14>1 2026-12-04T10:00:00Z ws-17 winlogbeat - - - {"winlog":{"event_id":"3","event_data":{"SourceIp":"10.0.0.1"}}}`,
	// SD elements named like a format or a JSON path, beside a payload (windows_review12_test.go).
	`<14>1 2026-12-04T10:00:00Z dc-01 agent - - [win EventID="4624" TargetUserName="bob"][NXLOG@14506 EventID="4625" IpAddress="10.0.0.1"] x`,
	`<14>1 2026-12-04T10:00:00Z dc-01 agent - - [json.winlog event_id="4624"][json.winlog.event_data TargetUserName="sd"] {"winlog":{"event_data":{"TargetUserName":"p"}},"winlog.event_data.TargetUserName":"f"}`,
	// A JSON path past its bound, cut between characters (TestJSONLongPathUTF8).
	`<14>1 2026-12-04T10:00:00Z ws-17 app - - - {"éééééééééééééééééééééééééééééééé":{"éééééééééééééééééééééééééééééééé":{"éééééééééééééééééééééééééééééééé":{"éééééééééééééééééééééééééééééééé":{"éééééééééééééééééééééééééééééééé":"v"}}}}}`,
	"<86>Dec  4 10:00:00 web-01 sudo:    alice : 3 incorrect password attempts ; TTY=pts/0 ; USER=root ; COMMAND=/bin/sh ; x",
	"<86>Dec  4 10:00:00 web-01 su[1]: (to root) alice on pts/0",
	"<86>Dec  4 10:00:00 web-01 usermod[1]: add 'x' to group 'sudo'",
	"<4>Dec  4 10:00:00 web-01 kernel: [1.2] [UFW BLOCK] IN=eth0 OUT= SRC=203.0.113.5 DST=10.0.0.4 PROTO=TCP SPT=1 DPT=22",
	`<85>Dec  4 10:00:00 web-01 audisp-syslog: type=USER_AUTH msg=audit(1.2:3): pid=1 msg='op=PAM acct="root" addr=203.0.113.5 res=failed'`,
	"<134>Dec  4 10:00:00 fw01 CEF:0|V|P|1|id|n|5|src=203.0.113.66 act=deny",
	"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
	"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
	"<86>2024-10-11T22:14:15.123456+02:00 web01 sshd[4242]: Accepted publickey for alice from 198.51.100.7 port 50022 ssh2: ED25519 SHA256:Zm9v",
	"<38>Oct 11 22:14:15 bastion sshd[1]: Failed password for invalid user admin from 203.0.113.5 port 22 ssh2",
	"<38>Oct 11 22:14:15 bastion sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root",
	"<38>Oct 11 22:14:15 bastion sshd-session[1]: Invalid user admin from 2001:db8::1 port 22",
	`<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] msg`,
	"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
	"<0>1 - - - - - -",
	"<0>1 0001-01-01T00:00:00Z - - - - -",
	"<13>Dec 31 23:59:59.999999999 h a[]: x",
	"<13>Feb 29 00:00:00 h a: x",
	"<191>Jan 1 00:00:00 h",
	"<34>hello\tworld\x00\xff",
	"hello world",
	"",
	"<",
	"<1",
	"<1>",
	"<1>1 ",
}

// FuzzParse checks that Parse never panics and that every event it accepts
// is well-formed.
func FuzzParse(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	received := time.Date(2024, 12, 31, 23, 0, 0, 0, time.UTC)
	p := NewParser()
	f.Fuzz(func(t *testing.T, msg []byte) {
		var ev event.Event
		if err := p.Parse(msg, received, "192.0.2.1:514", &ev); err != nil {
			return
		}
		if ev.Source != "syslog" || ev.ID == "" {
			t.Errorf("Source %q, ID %q", ev.Source, ev.ID)
		}
		if ev.Time.IsZero() {
			t.Error("Time is zero")
		}
		if ev.Severity < 0 || ev.Severity > 7 || ev.Facility < 0 || ev.Facility > 23 {
			t.Errorf("facility %d, severity %d", ev.Facility, ev.Severity)
		}
		for _, s := range []string{ev.Host, ev.App, ev.ProcID, ev.MsgID, ev.Message, ev.User, ev.SrcIP} {
			if !utf8.ValidString(s) {
				t.Errorf("invalid UTF-8 in %q", s)
			}
		}
		if ev.SrcPort < 0 || ev.SrcPort > 65535 || ev.DstPort < 0 || ev.DstPort > 65535 {
			t.Errorf("ports %d %d", ev.SrcPort, ev.DstPort)
		}
		for k, v := range ev.Attrs {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Errorf("invalid UTF-8 in attribute %q", k)
			}
		}
		// Keeping only the attributes rules read changes no field: with
		// no rule, and with rules reading every attribute.
		checkReadMode(t, string(msg), map[string]bool{})
		checkReadMode(t, string(msg), maps.Collect(func(yield func(string, bool) bool) {
			for k := range ev.Attrs {
				if !yield(k, true) {
					return
				}
			}
		}))
	})
}

// chunkReader returns its data in pieces of random length, as TCP does.
type chunkReader struct {
	data []byte
	rng  *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), 1+c.rng.IntN(16))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzFramer checks that framing does not depend on how the stream is cut
// into reads, and that no frame exceeds the limit.
func FuzzFramer(f *testing.F) {
	for _, s := range []string{
		"5 hello6 world!",
		"<1>a\r\n<2>b\n\n7 <3>c\nd",
		"11 01234567890<1>ok\n",
		"<1>0123456789ABCDEFGHIJ\n<1>ok\n",
		"12x garbage\n<1>ok\n",
		"123456789 x\n0 \n00 y\n12\n<1>ok",
		"10 01234",
		"99999999 abc",
		"\r\n\r\n\x00\n",
		"1 open 85 relp_version=0\nrelp_software=librelp\ncommands=syslog\n",
		"1 ope",
		"123456789 open x",
		"1234567890 open x",
		"7 openers\n",
	} {
		f.Add([]byte(s), uint8(10), uint64(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, size uint8, seed uint64) {
		maxSize := 1 + int(size)
		whole := framerOutput(t, bytes.NewReader(data), maxSize, len(data))
		pieces := framerOutput(t, &chunkReader{data: data, rng: rand.New(rand.NewPCG(seed, seed))}, maxSize, len(data))
		if !reflect.DeepEqual(whole, pieces) {
			t.Errorf("one piece and chunks differ:\n%q\n%q", whole, pieces)
		}
	})
}

// framerOutput records frames, error kinds and samples. Every result
// consumes at least one byte, so there are at most len(data)+1 of them.
func framerOutput(t *testing.T, r io.Reader, maxSize, n int) []string {
	fr := NewFramer(r, maxSize)
	var out []string
	for range n + 2 {
		b, err := fr.Next()
		var fe *FrameError
		switch {
		case err == nil:
			if len(b) == 0 || len(b) > maxSize {
				t.Fatalf("frame of %d bytes, limit %d", len(b), maxSize)
			}
			out = append(out, "f:"+string(b))
		case errors.As(err, &fe):
			if len(fe.Sample) > maxSize {
				t.Fatalf("sample of %d bytes, limit %d", len(fe.Sample), maxSize)
			}
			out = append(out, "e:"+fe.Kind+":"+string(fe.Sample))
		case err == io.EOF:
			return append(out, "EOF")
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	t.Fatalf("no EOF after %d results", n+2)
	return nil
}

// FuzzSplitMSG checks that go-syslog reads the header and structured data
// splitMSG leaves it as it reads them in the whole message, and that the
// MSG is what it would have found: the split changes nothing it accepts or
// rejects.
func FuzzSplitMSG(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1 a="q\"]\\ [x" b="]"][y@2 c=""] text [not sd]`,
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1 a="\x"] t`,
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1 a="\"\] b"] msg`,
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1 a="\\"] msg`,
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1 a="unterminated] t`,
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1][x@1] t`,
		`<14>1 2026-12-04T10:00:00Z h a - - [x@1]x`,
		`<14>1 2026-12-04T10:00:00Z h a - - -x`,
		`<14>1 2026-12-04T10:00:00Z h a - - - `,
		`<14>1 2026-12-04T10:00:00Z h a - -  - t`,
		`<14>1 2026-12-04T10:00:00.123456789Z h a - - - t`,
		"<14>1 2026-12-04T10:00:00Z h a - - - \uFEFFbom",
	} {
		f.Add([]byte(s))
	}
	full := rfc5424.NewParser(rfc5424.WithBestEffort())
	cut := rfc5424.NewParser(rfc5424.WithBestEffort())
	f.Fuzz(func(t *testing.T, msg []byte) {
		if !utf8.Valid(msg) {
			return // Parse repairs it first
		}
		head, text, ok := splitMSG(msg)
		if !ok {
			return // go-syslog reads the whole message
		}
		want, errWant := full.Parse(msg)
		got, errGot := cut.Parse(head)
		if (errWant == nil) != (errGot == nil) {
			t.Fatalf("whole: %v, split at %d: %v", errWant, len(head), errGot)
		}
		if errWant != nil {
			return
		}
		w, g := want.(*rfc5424.SyslogMessage), got.(*rfc5424.SyslogMessage)
		if deref(w.Message) != string(text) {
			t.Fatalf("MSG %q, split %q", deref(w.Message), text)
		}
		g.Message = w.Message
		if !reflect.DeepEqual(w, g) {
			t.Fatalf("whole %+v\nsplit %+v", w, g)
		}
	})
}
