package syslog_test

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
)

func ExampleParser_Parse() {
	p := syslog.NewParser(syslog.WithLocation(time.UTC))
	received := time.Date(2024, time.October, 12, 8, 0, 0, 0, time.UTC)
	var ev event.Event
	msg := "<38>Oct 11 22:14:15 bastion sshd[4242]: Failed password for invalid user admin from 203.0.113.5 port 52114 ssh2"
	if err := p.Parse([]byte(msg), received, "192.0.2.10:514", &ev); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.Time, ev.Host, ev.App, ev.ProcID, ev.Facility, ev.Severity)
	fmt.Println(ev.Category, ev.Action, ev.Outcome, ev.User, ev.SrcIP, ev.SrcPort, ev.Protocol)
	// Output:
	// 2024-10-11 22:14:15 +0000 UTC bastion sshd 4242 4 6
	// authentication logon failure admin 203.0.113.5 52114 ssh
}

func ExampleFramer() {
	// An octet-counted frame, an LF frame with CRLF, and an oversize frame
	// followed by a good one, all on one stream.
	stream := "10 <13>hello!<13>world\r\n600 " + strings.Repeat("x", 600) + "<13>next\n"
	f := syslog.NewFramer(strings.NewReader(stream), 480)
	for {
		msg, err := f.Next()
		if err != nil {
			fmt.Println(err)
			var bad *syslog.FrameError
			if errors.As(err, &bad) {
				continue
			}
			return
		}
		fmt.Printf("%q\n", msg)
	}
	// Output:
	// "<13>hello!"
	// "<13>world"
	// oversize: frame of 600 bytes declared, the limit is 480
	// "<13>next"
	// EOF
}
