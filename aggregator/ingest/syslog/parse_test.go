package syslog

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// received is the reception time of the Parse tests, unless a case sets one.
var testReceived = time.Date(2024, time.October, 12, 8, 0, 0, 0, time.UTC)

func TestParse(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		in       string
		loc      *time.Location
		received time.Time // zero: testReceived
		want     event.Event
		fallback bool
	}{
		{
			name: "rfc5424 with structured data",
			in:   `<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry`,
			want: event.Event{
				Time: time.Date(2003, 10, 11, 22, 14, 15, 3e6, time.UTC), Facility: 20, Severity: 5,
				Host: "mymachine.example.com", App: "evntslog", MsgID: "ID47",
				Message: "An application event log entry",
				Attrs: map[string]string{
					"exampleSDID@32473.iut": "3", "exampleSDID@32473.eventSource": "Application",
					"exampleSDID@32473.eventID": "1011", "examplePriority@32473.class": "high",
				},
			},
		},
		{
			name: "rfc5424 without structured data",
			in:   "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su 4123 ID47 - 'su root' failed for lonvick on /dev/pts/8",
			want: event.Event{
				Time: time.Date(2003, 10, 11, 22, 14, 15, 3e6, time.UTC), Facility: 4, Severity: 2,
				Host: "mymachine.example.com", App: "su", ProcID: "4123", MsgID: "ID47",
				Message: "'su root' failed for lonvick on /dev/pts/8",
			},
		},
		{
			name: "rfc5424 with offset and microseconds",
			in:   "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
			want: event.Event{
				Time: time.Date(2003, 8, 24, 12, 14, 15, 3000, time.UTC), Facility: 20, Severity: 5,
				Host: "192.0.2.1", App: "myproc", ProcID: "8710", Message: "%% It's time to make the do-nuts.",
			},
		},
		{
			name: "rfc5424 nil timestamp takes the reception time",
			in:   "<13>1 - host app 123 - - hello",
			want: event.Event{Time: testReceived, Facility: 1, Severity: 5, Host: "host", App: "app", ProcID: "123", Message: "hello"},
		},
		{
			name: "rfc5424 all nil values",
			in:   "<0>1 - - - - - -",
			want: event.Event{Time: testReceived},
		},
		{
			name: "rfc5424 BOM is dropped",
			in:   "<14>1 - h a - - - \xEF\xBB\xBFgrüße",
			want: event.Event{Time: testReceived, Facility: 1, Severity: 6, Host: "h", App: "a", Message: "grüße"},
		},
		{
			name: "rfc5424 invalid UTF-8 in MSG is kept, repaired",
			in:   "<14>1 - h a - - - caf\xe9 ok",
			want: event.Event{Time: testReceived, Facility: 1, Severity: 6, Host: "h", App: "a", Message: "caf\uFFFD ok"},
		},
		{
			name: "rfc5424 sshd is normalized",
			in:   "<38>1 2024-10-11T22:14:15Z bastion sshd 901 - - Failed password for root from 203.0.113.5 port 2222 ssh2",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 22, 14, 15, 0, time.UTC), Facility: 4, Severity: 6,
				Host: "bastion", App: "sshd", ProcID: "901", Message: "Failed password for root from 203.0.113.5 port 2222 ssh2",
				Category: "authentication", Action: "logon", Outcome: "failure", User: "root",
				SrcIP: "203.0.113.5", SrcPort: 2222, Protocol: "ssh",
			},
		},
		{
			name: "rfc3164 classic",
			in:   "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 22, 14, 15, 0, time.UTC), Facility: 4, Severity: 2,
				Host: "mymachine", App: "su", Message: "'su root' failed for lonvick on /dev/pts/8",
			},
		},
		{
			name: "rfc3164 in the configured zone",
			in:   "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
			loc:  berlin,
			want: event.Event{
				Time: time.Date(2024, 10, 11, 22, 14, 15, 0, berlin), Facility: 4, Severity: 2,
				Host: "mymachine", App: "su", Message: "'su root' failed",
			},
		},
		{
			name: "rfc3164 rsyslog forward format (RFC 3339 with fraction)",
			in:   "<86>2024-10-11T22:14:15.123456+02:00 web01 sshd[4242]: Accepted publickey for alice from 198.51.100.7 port 50022 ssh2: ED25519 SHA256:Zm9v",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 20, 14, 15, 123456000, time.UTC), Facility: 10, Severity: 6,
				Host: "web01", App: "sshd", ProcID: "4242",
				Message:  "Accepted publickey for alice from 198.51.100.7 port 50022 ssh2: ED25519 SHA256:Zm9v",
				Category: "authentication", Action: "logon", Outcome: "success", User: "alice",
				SrcIP: "198.51.100.7", SrcPort: 50022, Protocol: "ssh",
			},
		},
		{
			name: "rfc3164 Go log/syslog format (RFC 3339, no fraction)",
			in:   "<28>2024-10-11T22:14:15+01:00 Callisto.local demotag[40516]: This is a daemon warning",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 21, 14, 15, 0, time.UTC), Facility: 3, Severity: 4,
				Host: "Callisto.local", App: "demotag", ProcID: "40516", Message: "This is a daemon warning",
			},
		},
		{
			name: "rfc3164 space-padded day, fraction, no hostname",
			in:   "<13>Oct  1 22:14:15.250 cron[12]: (root) CMD (run-parts /etc/cron.hourly)",
			want: event.Event{
				Time: time.Date(2024, 10, 1, 22, 14, 15, 250e6, time.UTC), Facility: 1, Severity: 5,
				App: "cron", ProcID: "12", Message: "(root) CMD (run-parts /etc/cron.hourly)",
			},
		},
		{
			name: "rfc3164 control characters stay in the message",
			in:   "<11>Oct 11 22:14:15 app01 java[77]: Exception in thread \"main\"\n\tat Main.run(Main.java:3)",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 22, 14, 15, 0, time.UTC), Facility: 1, Severity: 3,
				Host: "app01", App: "java", ProcID: "77", Message: "Exception in thread \"main\"\n\tat Main.run(Main.java:3)",
			},
		},
		{
			name: "rfc3164 tag[pid] without colon or space",
			in:   "<13>Oct 11 22:14:15 h1 app[9]:text",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 22, 14, 15, 0, time.UTC), Facility: 1, Severity: 5,
				Host: "h1", App: "app", ProcID: "9", Message: "text",
			},
		},
		{
			name: "rfc3164 without tag",
			in:   "<13>Oct 11 22:14:15 h1 something happened: details",
			want: event.Event{
				Time: time.Date(2024, 10, 11, 22, 14, 15, 0, time.UTC), Facility: 1, Severity: 5,
				Host: "h1", Message: "something happened: details",
			},
		},
		{
			name: "rfc3164 header only",
			in:   "<13>Oct 11 22:14:15 h1",
			want: event.Event{Time: time.Date(2024, 10, 11, 22, 14, 15, 0, time.UTC), Facility: 1, Severity: 5, Host: "h1"},
		},
		{
			name: "year rollover: December received in January",
			in:   "<13>Dec 31 23:59:58 h a: late",
			// the time, in the received year, would be a year ahead
			received: time.Date(2025, 1, 1, 0, 0, 10, 0, time.UTC),
			want: event.Event{
				Time: time.Date(2024, 12, 31, 23, 59, 58, 0, time.UTC), Facility: 1, Severity: 5,
				Host: "h", App: "a", Message: "late",
			},
		},
		{
			name:     "year rollover: sender clock ahead over new year",
			in:       "<13>Jan  1 00:00:03 h a: early",
			received: time.Date(2024, 12, 31, 23, 59, 58, 0, time.UTC),
			want: event.Event{
				Time: time.Date(2025, 1, 1, 0, 0, 3, 0, time.UTC), Facility: 1, Severity: 5,
				Host: "h", App: "a", Message: "early",
			},
		},
		{
			name: "year: less than 24 h ahead stays in the received year",
			in:   "<13>Oct 12 20:00:00 h a: x",
			want: event.Event{Time: time.Date(2024, 10, 12, 20, 0, 0, 0, time.UTC), Facility: 1, Severity: 5, Host: "h", App: "a", Message: "x"},
		},
		{
			name: "year: more than 24 h ahead is last year",
			in:   "<13>Oct 14 08:00:00 h a: x",
			want: event.Event{Time: time.Date(2023, 10, 14, 8, 0, 0, 0, time.UTC), Facility: 1, Severity: 5, Host: "h", App: "a", Message: "x"},
		},
		{
			name:     "year: Feb 29 goes to the last leap year",
			in:       "<13>Feb 29 10:00:00 h a: x",
			received: time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC),
			want:     event.Event{Time: time.Date(2024, 2, 29, 10, 0, 0, 0, time.UTC), Facility: 1, Severity: 5, Host: "h", App: "a", Message: "x"},
		},
		{
			name:     "no PRI: RFC 3164 4.3.3",
			in:       "hello world",
			want:     event.Event{Time: testReceived, Facility: 1, Severity: 5, Message: "hello world"},
			fallback: true,
		},
		{
			name:     "invalid PRI: RFC 3164 4.3.3",
			in:       "<192>Oct 11 22:14:15 h a: x",
			want:     event.Event{Time: testReceived, Facility: 1, Severity: 5, Message: "<192>Oct 11 22:14:15 h a: x"},
			fallback: true,
		},
		{
			name:     "PRI without timestamp: RFC 3164 4.3.2",
			in:       "<34>hello world",
			want:     event.Event{Time: testReceived, Facility: 4, Severity: 2, Message: "hello world"},
			fallback: true,
		},
		{
			name:     "impossible date",
			in:       "<34>Apr 31 22:14:15 h a: x",
			want:     event.Event{Time: testReceived, Facility: 4, Severity: 2, Message: "Apr 31 22:14:15 h a: x"},
			fallback: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			fallback := prometheus.NewCounter(prometheus.CounterOpts{Name: "fallback_total"})
			reg.MustRegister(fallback)
			p := NewParser(WithLocation(tt.loc))
			p.fallback = fallback.Inc

			received := tt.received
			if received.IsZero() {
				received = testReceived
			}
			var got event.Event
			if err := p.Parse([]byte(tt.in), received, "192.0.2.9:514", &got); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.ID == "" {
				t.Error("ID is empty")
			}
			want := tt.want
			want.ID, want.Source, want.Received, want.Sender = got.ID, "syslog", received, "192.0.2.9:514"
			if !got.Time.Equal(want.Time) {
				t.Errorf("Time = %v, want %v", got.Time, want.Time)
			}
			got.Time = want.Time // compared as instants above
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.in, got, want)
			}
			if n := counterValue(t, reg, "fallback_total", nil); (n == 1) != tt.fallback {
				t.Errorf("fallback counted %v times, want fallback=%v", n, tt.fallback)
			}
		})
	}
}

func TestParseRFC5424Errors(t *testing.T) {
	for _, in := range []string{
		"<34>1 2003-10-11T22:14:15.003Z mymachine", // header cut short
		"<34>1 garbage", // no timestamp
		`<34>1 - h a p m [x@1 a="b"][x@1 c="d"] duplicate SD-ID`, // RFC 5424 6.3.2
		`<34>1 - h a p m [x@1 a="unterminated] msg`,              // bad SD
		"<999>1 - - - - - -",                                     // PRI out of range
	} {
		t.Run(in, func(t *testing.T) {
			var ev event.Event
			err := NewParser().Parse([]byte(in), testReceived, "", &ev)
			if err == nil {
				t.Fatalf("Parse(%q) = nil, want an error; event %+v", in, ev)
			}
			if !strings.HasPrefix(err.Error(), "rfc5424: ") {
				t.Errorf("error %q does not start with the kind", err)
			}
		})
	}
}

func TestParseUniqueIDs(t *testing.T) {
	p := NewParser()
	seen := make(map[string]bool)
	for range 1000 {
		var ev event.Event
		if err := p.Parse([]byte("<13>Oct 11 22:14:15 h a: x"), testReceived, "", &ev); err != nil {
			t.Fatal(err)
		}
		if seen[ev.ID] {
			t.Fatalf("duplicate id %q", ev.ID)
		}
		seen[ev.ID] = true
	}
}

// counterValue reads a counter or gauge from g; labels must match exactly
// the labels given (nil: the metric has none besides constant ones).
func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// Nine digits of fractional seconds (Go's RFC3339Nano) are beyond RFC 5424's
// six but common; they are cut to six rather than rejected.
func TestNanosecondTimestamps(t *testing.T) {
	p := NewParser()
	for _, ts := range []string{"2026-11-23T10:00:00.123456789Z", "2026-11-23T10:00:00.1234567+01:00", "2026-11-23T10:00:00.123456Z"} {
		var ev event.Event
		msg := "<38>1 " + ts + " web-01 sshd 4242 - - Failed password for root from 203.0.113.5 port 22 ssh2"
		if err := p.Parse([]byte(msg), time.Now(), "127.0.0.1:1", &ev); err != nil {
			t.Errorf("%s: %v", ts, err)
			continue
		}
		if ev.Time.Nanosecond()/1000 != 123456 || ev.SrcIP != "203.0.113.5" {
			t.Errorf("%s: time %v, src %q", ts, ev.Time, ev.SrcIP)
		}
	}
}

func TestParseIPCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1", "::ffff:10.0.0.1": "10.0.0.1", "2001:DB8::0001": "2001:db8::1",
		"010.0.0.1": "", "300.1.1.1": "", "host": "",
	} {
		if got := parseIP(in); got != want {
			t.Errorf("parseIP(%q) = %q, want %q", in, got, want)
		}
	}
}
