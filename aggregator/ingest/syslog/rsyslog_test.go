package syslog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/rsyslogtest"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
)

// numbered returns n syslog lines "line i" for rsyslog's plain input.
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("<13>Dec  4 10:00:00 sender-%s app: %s line %d", prefix, prefix, i)
	}
	return out
}

// lineNumbers returns the numbers of "<prefix> line N" messages, sorted,
// and fails on one that appears twice when unique is set.
func lineNumbers(t *testing.T, evs []*event.Event, prefix string) []int {
	t.Helper()
	var out []int
	for _, ev := range evs {
		rest, ok := strings.CutPrefix(ev.Message, prefix+" line ")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil {
			t.Fatalf("message %q", ev.Message)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// rsyslogSender runs rsyslogd with a plain imtcp input the test writes to
// and the given forwarding action; it returns the input's address.
func rsyslogSender(t *testing.T, global, action string, modules ...string) (string, *rsyslogtest.Rsyslog) {
	t.Helper()
	rsyslogtest.Need(t, modules...)
	dir := t.TempDir()
	in := fmt.Sprintf("127.0.0.1:%d", rsyslogtest.FreePort(t))
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k" %s)
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port=%q)
%s
`, dir, global, in[strings.LastIndexByte(in, ':')+1:], action)
	return in, rsyslogtest.Start(t, dir, conf, in, modules...)
}

// TestRsyslogOverTLS: a real rsyslog sends with omfwd over TLS, with each
// of its TLS stream drivers (GnuTLS and OpenSSL), with and without a
// client certificate; and a client not in client_names is refused.
func TestRsyslogOverTLS(t *testing.T) {
	f := newTLSFixture(t)
	for _, driver := range []string{"gtls", "ossl"} {
		for _, mutual := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s mutual=%v", driver, mutual), func(t *testing.T) {
				files := TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}
				global := fmt.Sprintf("DefaultNetstreamDriverCAFile=%q", f.ca.File)
				if mutual {
					files.ClientCAFile, files.ClientNames = f.ca.File, []string{"sender-1.test"}
					global += fmt.Sprintf(" DefaultNetstreamDriverCertFile=%q DefaultNetstreamDriverKeyFile=%q", f.clientCert, f.clientKy)
				}
				sink := &memSink{}
				ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
					TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: files}}}, sink)
				port := ts.tlsAddr()[strings.LastIndexByte(ts.tlsAddr(), ':')+1:]
				action := fmt.Sprintf(`action(type="omfwd" target="127.0.0.1" port=%q protocol="tcp" TCP_Framing="octet-counted"
  StreamDriver=%q StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="outpost.test")`, port, driver)
				in, _ := rsyslogSender(t, global, action, "lmnsd_"+driver)
				rsyslogtest.Send(t, in, numbered(driver, 200))
				evs, _ := sink.wait(t, 200, 0)
				if got := lineNumbers(t, evs, driver); len(got) != 200 || got[199] != 199 {
					t.Fatalf("lines: %d, last %v", len(got), got[len(got)-1])
				}
				if evs[0].Host != "sender-"+driver {
					t.Fatalf("host %q", evs[0].Host)
				}
				if n := ts.metric(t, "outpost_component_received_events_total", map[string]string{"transport": "tls"}); n != 200 {
					t.Fatalf("tls events counted: %v", n)
				}
			})
		}
	}
	// Refusals, with rsyslog as the client: each is counted under its
	// reason, and delivers nothing.
	other := tlstest.NewCA(t, t.TempDir(), "someone-else")
	strangerCert, strangerKey := other.Valid("stranger", "sender-1.test", false)
	expiredCert, expiredKey := f.ca.Issue("expired", "sender-1.test", false, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	unlistedCert, unlistedKey := f.ca.Valid("unlisted", "sender-9.test", false)
	for _, tc := range []struct {
		name, cert, key string
		reasons         []string // what the refusal is counted as
	}{
		{"not in client_names", unlistedCert, unlistedKey, []string{tlsNotAllowed}},
		{"another CA", strangerCert, strangerKey, []string{tlsUnknownCA}},
		{"expired", expiredCert, expiredKey, []string{tlsExpired}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
				TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey,
					ClientCAFile: f.ca.File, ClientNames: []string{"sender-1.test"}}}}}, sink)
			port := ts.tlsAddr()[strings.LastIndexByte(ts.tlsAddr(), ':')+1:]
			global := fmt.Sprintf("DefaultNetstreamDriverCAFile=%q DefaultNetstreamDriverCertFile=%q DefaultNetstreamDriverKeyFile=%q",
				f.ca.File, tc.cert, tc.key)
			in, _ := rsyslogSender(t, global, fmt.Sprintf(`action(type="omfwd" target="127.0.0.1" port=%q protocol="tcp"
  StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="outpost.test")`, port), "lmnsd_gtls")
			rsyslogtest.Send(t, in, numbered("x", 3))
			counted := func() (string, float64) {
				for _, r := range tc.reasons {
					if n := ts.metric(t, "outpost_syslog_tls_handshake_errors_total", map[string]string{"reason": r}); n > 0 {
						return r, n
					}
				}
				return "", 0
			}
			waitUntil(t, func() bool { _, n := counted(); return n >= 1 })
			time.Sleep(100 * time.Millisecond)
			if evs, _ := sink.wait(t, 0, 0); len(evs) != 0 {
				t.Fatalf("a refused client delivered %d events", len(evs))
			}
			r, _ := counted()
			t.Logf("counted as %s", r)
		})
	}
}

// TestRsyslogOverRELP: a real rsyslog sends with omrelp, plain and over
// TLS (librelp's), and every line arrives once; the sink was flushed
// before the acknowledgements.
func TestRsyslogOverRELP(t *testing.T) {
	f := newTLSFixture(t)
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			l := RELPListener{Listen: "127.0.0.1:0"}
			extra := ""
			if useTLS {
				l.TLS = &TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey, ClientCAFile: f.ca.File, ClientNames: []string{"sender-1.test"}}
				extra = fmt.Sprintf(` tls="on" tls.caCert=%q tls.myCert=%q tls.myPrivKey=%q tls.authMode="name" tls.permittedPeer=["outpost.test"]`,
					f.ca.File, f.clientCert, f.clientKy)
			}
			sink := &memSink{}
			ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{l}}, sink)
			addr := ts.ListenAddrs("relp")[0].String()
			port := addr[strings.LastIndexByte(addr, ':')+1:]
			in, _ := rsyslogSender(t, "", fmt.Sprintf(`module(load="omrelp")
action(type="omrelp" target="127.0.0.1" port=%q%s)`, port, extra), "omrelp")
			rsyslogtest.Send(t, in, numbered("relp", 500))
			evs, _ := sink.wait(t, 500, 0)
			got := lineNumbers(t, evs, "relp")
			if len(got) != 500 || got[0] != 0 || got[499] != 499 || len(slices.Compact(got)) != 500 {
				t.Fatalf("lines: %d", len(got))
			}
			sink.mu.Lock()
			flushes := sink.flushes
			sink.mu.Unlock()
			if flushes == 0 {
				t.Fatal("no flush before the acknowledgements")
			}
			if n := ts.metric(t, "outpost_component_received_events_total", map[string]string{"transport": "relp"}); n != 500 {
				t.Fatalf("relp events counted: %v", n)
			}
		})
	}
}
