package payload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// result is what one message became, for the golden files.
type result struct {
	Message string       `json:"message"`
	Format  string       `json:"format"`
	Parsed  bool         `json:"parsed"`
	Event   *event.Event `json:"event,omitempty"`
}

// run detects and applies the format of each line of testdata/<name>.txt.
func run(t *testing.T, name string) []result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []result
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		ev := &event.Event{Source: "syslog", Message: line}
		f := Detect(ev)
		ok := Apply(f, ev, nil)
		if !ok && ev.Message != line {
			t.Errorf("%q: not parsed, but the event changed", line)
		}
		out = append(out, result{Message: line, Format: f, Parsed: ok, Event: ev})
	}
	return out
}

// TestGolden: each format's sample messages (testdata/<format>.txt,
// written for these tests from the vendors' format descriptions) give the
// events in testdata/golden/<format>.json; -update rewrites them.
func TestGolden(t *testing.T) {
	for _, name := range Formats {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(run(t, name), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the golden file; run `go test ./aggregator/ingest/payload -run TestGolden -update` and review the diff", name)
			}
		})
	}
}

// What each format's mapping must give, asserted here as well as in the
// golden files.
func TestMappings(t *testing.T) {
	var all []result
	for _, name := range Formats {
		all = append(all, run(t, name)...)
	}
	check := func(prefix string, want map[string]string) {
		t.Helper()
		var ev *event.Event
		for _, r := range all {
			if strings.HasPrefix(r.Message, prefix) {
				ev = r.Event
				break
			}
		}
		if ev == nil {
			t.Fatalf("no sample starts %q", prefix)
		}
		got := map[string]string{
			"src_ip": ev.SrcIP, "dst_ip": ev.DstIP, "user": ev.User, "action": ev.Action, "outcome": ev.Outcome,
			"protocol": ev.Protocol, "app": ev.App,
		}
		if ev.SrcPort != 0 {
			got["src_port"] = itoa(ev.SrcPort)
		}
		if ev.DstPort != 0 {
			got["dst_port"] = itoa(ev.DstPort)
		}
		for k, v := range ev.Attrs {
			got[k] = v
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s...: %s = %q, want %q", prefix[:min(len(prefix), 40)], k, got[k], v)
			}
		}
	}
	check("CEF:0|Palo Alto Networks|PAN-OS|11.1.0|end|TRAFFIC|3|rt=Dec", map[string]string{
		"src_ip": "198.51.100.20", "dst_ip": "10.1.0.4", "src_port": "51022", "dst_port": "3389", "protocol": "tcp", "action": "deny",
		"rule_name": "deny-inbound-rdp", "service": "ms-rdp", "bytes_in": "0", "bytes_out": "74", "device_vendor": "Palo Alto Networks",
		"device_product": "PAN-OS", "event_code": "end", "app": "PAN-OS", "cef.cs3": "vsys1", "cef.rt": "Dec 04 2026 10:00:00 GMT", "cef.name": "TRAFFIC",
	})
	check("CEF:0|Fortinet|FortiGate-VM64|7.4.3|0000000013|", map[string]string{"protocol": "tcp", "cef.msg": "blocked = by policy", "rule_name": "block ssh"})
	check(`CEF:0|Acme\|Corp|Web\\Guard|2.0|waf-941100|`, map[string]string{
		"device_vendor": "Acme|Corp", "device_product": `Web\Guard`, "url": "https://shop.example/search?q=<script>", "http_method": "GET",
		"outcome": "failure", "action": "blocked", "user": "anonymous", "cef.cs2": "OWASP CRS 3.3",
	})
	check("CEF:0|Check Point|VPN-1 & FireWall-1|R81.20|", map[string]string{"src_ip": "2001:db8::5", "dst_ip": "2001:db8:1::7", "protocol": "udp", "cef.msg": "line one\nline two"})
	check("CEF:1|Example|EDR|4.2|proc-7|", map[string]string{"user": `CONTOSO\alice`, "target_user": "administrator", "process": `C:\Windows\System32\cmd.exe`,
		"command_line": "cmd.exe /c whoami /all", "file_path": `C:\Users\alice\a.exe`, "process_id": "4242"})
	check("CEF:0|Vendor|Product|1.0|id|name|5|=novalue", map[string]string{"src_ip": "", "src_port": "", "dst_ip": "fe80::1", "cef.key": ""})
	check("LEEF:1.0|Microsoft|MSExchange|2016|15345|", map[string]string{"src_ip": "10.50.1.1", "dst_ip": "192.0.2.20", "src_port": "1200", "user": "bob@contoso.example",
		"protocol": "tcp", "device_vendor": "Microsoft", "event_code": "15345"})
	check("LEEF:2.0|Lancope|StealthWatch|1.0|41|^|", map[string]string{"src_ip": "10.0.1.8", "dst_port": "21", "user": "joe.black", "leef.cat": "anomaly"})
	check("LEEF:2.0|Imperva|SecureSphere|14.7|SQL Injection|x5E|", map[string]string{"action": "blocked", "url": "/login?id=1 OR 1=1", "rule_name": "Web Protection", "dst_port": "443"})
	check("LEEF:2.0|Vendor|Prod|1|100|src=192.0.2.1", map[string]string{"src_ip": "192.0.2.1"})
	check(`date=2026-12-04 time=10:00:00 devname="FGT-EDGE-01"`, map[string]string{
		"src_ip": "203.0.113.66", "dst_ip": "10.0.2.5", "src_port": "41000", "dst_port": "22", "action": "deny", "protocol": "tcp",
		"rule_name": "implicit deny", "service": "SSH", "bytes_out": "0", "event_code": "0000000013", "kv.devname": "FGT-EDGE-01",
	})
	check("action=allow src=10.0.0.1 dst=10.0.0.2 msg=user logged in from console user=alice", map[string]string{"kv.msg": "user logged in from console", "user": "alice", "action": "allow"})
	check(`user="a \"quoted\" name" result=failed`, map[string]string{"user": `a "quoted" name`, "outcome": "failure", "src_ip": "192.0.2.9", "kv.reason": "bad password"})
	check(`{"@timestamp":"2026-12-04T10:00:00Z","event":{"code":"1"`, map[string]string{
		"process": `C:\Windows\System32\cmd.exe`, "command_line": "cmd.exe /c whoami", "process_id": "4242", "user": "alice", "event_code": "1",
		"parent_process": `C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`, "json.host.name": "WS-17",
	})
	check(`{"level":"warn","msg":"login failed","user":"bob"`, map[string]string{"user": "bob", "src_ip": "198.51.100.9", "json.tags.1": "web", "json.nested.n": "1.5e3", "json.nested.b": "true"})
	check(`{"source":{"ip":"203.0.113.5","port":5353}`, map[string]string{"dns_query": "exfil.example.net", "protocol": "udp", "outcome": "success", "dst_port": "53"})
}

func itoa(n int) string { return strconv.Itoa(n) }

// Detect tells the formats apart by their first bytes, and the syslog
// header's TAG taking "CEF" or "LEEF" does not hide them.
func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		app, msg, want string
	}{
		{"", "CEF:0|a|b|c|d|e|1|src=1.2.3.4", FormatCEF},
		{"CEF", "0|a|b|c|d|e|1|src=1.2.3.4", FormatCEF},
		{"", "LEEF:1.0|a|b|c|d|src=1.2.3.4", FormatLEEF},
		{"LEEF", "2.0|a|b|c|d|^|src=1.2.3.4", FormatLEEF},
		{"", `{"a":1}`, FormatJSON},
		{"", "a=1 b=2 c=3", FormatKV},
		{"", "a=1 b=2", ""},
		{"sshd", "Accepted password for root from 192.0.2.1 port 22 ssh2", ""},
		{"", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.1", ""},
		{"CEF", "not a version", ""},
		{"", "", ""},
	} {
		ev := &event.Event{App: tc.app, Message: tc.msg}
		if got := Detect(ev); got != tc.want {
			t.Errorf("Detect(app %q, %q) = %q, want %q", tc.app, tc.msg, got, tc.want)
		}
	}
	// The TAG case parses as if the message were whole, and the app
	// becomes the device product.
	ev := &event.Event{App: "CEF", Message: "0|Cisco|FTD|7.2|430003|Connection denied|5|src=192.0.2.7 act=Block"}
	if !Apply(Detect(ev), ev, nil) || ev.SrcIP != "192.0.2.7" || ev.App != "FTD" || ev.Attrs["device_vendor"] != "Cisco" {
		t.Errorf("CEF after a TAG: %+v", ev)
	}
}

// Hostile input: huge, repetitive, deeply nested; bounded output.
func TestBounds(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	many := strings.Repeat("k=v ", 10_000)
	deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	spaces := "a=1 b=2 c=" + strings.Repeat(" ", 200_000) + "z"
	for _, msg := range []string{
		"CEF:0|v|p|1|id|n|5|msg=" + long,
		"CEF:0|v|p|1|id|n|5|" + many,
		"CEF:0|" + strings.Repeat(`\|`, 50_000),
		"LEEF:2.0|v|p|1|id|^|" + strings.Repeat("k=v^", 10_000),
		many, spaces, deep,
		`{"a":"` + long + `"}`,
	} {
		ev := &event.Event{Message: msg}
		Apply(Detect(ev), ev, nil)
		if len(ev.Attrs) > maxAttrs+len(event.Schema) {
			t.Errorf("%d attributes from a %d-byte message", len(ev.Attrs), len(msg))
		}
		for k, v := range ev.Attrs {
			if len(v) > maxValue {
				t.Errorf("attribute %q of %d bytes", k, len(v))
			}
		}
	}
}

// A JSON message cannot make long attribute names: keys longer than a key
// are dropped, paths are bounded, and the key cap stops the walk (found by
// review: one 64 KB datagram allocated 505 MB).
func TestJSONNamesBounded(t *testing.T) {
	msg := `{"` + strings.Repeat("k", 32000) + `":[` + strings.Repeat("0,", 16000) + `0],"ok":{"` + strings.Repeat("a.", 200) + `":1}}`
	ev := &event.Event{Message: msg}
	if !Apply(Detect(ev), ev, nil) {
		t.Fatal("not parsed")
	}
	total := 0
	for k := range ev.Attrs {
		total += len(k)
		if len(k) > len("json.")+maxJSONPath {
			t.Errorf("attribute name of %d bytes", len(k))
		}
	}
	if total > 64<<10 {
		t.Errorf("%d bytes of attribute names", total)
	}
}

// A CEF extension key named like a header field does not replace the
// header's vendor, product or signature (found by review).
func TestCEFHeaderWins(t *testing.T) {
	ev := &event.Event{Message: "CEF:0|Cisco|FTD|7.2|430003|denied|5|src=192.0.2.1 device_product=Nothing signature_id=0"}
	if !Apply(Detect(ev), ev, nil) || ev.App != "FTD" || ev.Attrs["device_product"] != "FTD" || ev.Attrs["event_code"] != "430003" {
		t.Errorf("app %q attrs %v", ev.App, ev.Attrs)
	}
}

// A Winlogbeat event with many other keys keeps its winlog fields: the
// keys the Windows normalizer reads are flattened first (found by review).
func TestJSONWinlogFirst(t *testing.T) {
	var ips []string
	for i := range 150 {
		ips = append(ips, `"10.0.`+strconv.Itoa(i/250)+`.`+strconv.Itoa(i%250)+`"`)
	}
	ev := &event.Event{Message: `{"agent":{"name":"w"},"host":{"ip":[` + strings.Join(ips, ",") + `]},"winlog":{"event_id":"4625","channel":"Security"}}`}
	if !Apply(Detect(ev), ev, nil) || ev.Attrs["json.winlog.event_id"] != "4625" || ev.Attrs["json.winlog.channel"] != "Security" {
		t.Errorf("winlog lost: %d attrs", len(ev.Attrs))
	}
}

// JSON values as the sender wrote them: a key written twice counts once,
// with its last value; numbers keep their text; escapes are read; null is
// no value; a subtree past the depth bound is kept as compact JSON text.
func TestJSONValues(t *testing.T) {
	deep := strings.Repeat(`{"d":`, maxJSONDepth+1) + `{"x": [1, "two"]}` + strings.Repeat("}", maxJSONDepth+1)
	for _, c := range []struct{ msg, key, want string }{
		{`{"a":"1","b":"x","a":"2"}`, "json.a", "2"},
		{`{"n":1.5e3}`, "json.n", "1.5e3"},
		{`{"n":-0.25}`, "json.n", "-0.25"},
		{`{"s":"C:\\Windows\\cmd.exe \"x\" \u00e9"}`, "json.s", `C:\Windows\cmd.exe "x" é`},
		{`{"t":true,"f":false}`, "json.f", "false"},
		{`{"l":["a",{"b":"c"}]}`, "json.l.1.b", "c"},
		{deep, "json" + strings.Repeat(".d", maxJSONDepth), `{"d":{"x":[1,"two"]}}`},
	} {
		ev := &event.Event{Message: c.msg}
		if !Apply(Detect(ev), ev, nil) {
			t.Errorf("%s: not parsed", c.msg)
			continue
		}
		if got := ev.Attrs[c.key]; got != c.want {
			t.Errorf("%s: %s = %q, want %q (attrs %v)", c.msg, c.key, got, c.want, ev.Attrs)
		}
	}
	ev := &event.Event{Message: `{"a":null}`}
	if !Apply(Detect(ev), ev, nil) || len(ev.Attrs) != 0 {
		t.Errorf("null: %v", ev.Attrs)
	}
	for _, msg := range []string{`{"a":1} trailing`, `{"a":1`, `{"a":}`, `{"a":1}{"b":2}`} {
		ev := &event.Event{Message: msg}
		if Apply(FormatJSON, ev, nil) {
			t.Errorf("%q parsed: %v", msg, ev.Attrs)
		}
	}
}

// A JSON path cut at maxJSONPath is cut between characters: attribute
// names are valid UTF-8 like every event string (found by review: keys of
// 32 "é" cut the fourth level's name in the middle of one).
func TestJSONLongPathUTF8(t *testing.T) {
	k := strings.Repeat("é", 32) // 64 bytes: a key
	msg := `{"` + k + `":{"` + k + `":{"` + k + `":{"` + k + `":{"` + k + `":"v"}}}}}`
	ev := &event.Event{Message: msg}
	if !Apply(Detect(ev), ev, nil) {
		t.Fatal("not parsed")
	}
	for name, v := range ev.Attrs {
		if !utf8.ValidString(name) || !utf8.ValidString(v) {
			t.Errorf("invalid UTF-8: attribute %q = %q", name, v)
		}
	}
}

// A subtree kept as text past the depth bound does not depend on the
// order the sender wrote its keys in, counts a repeated key once with its
// last value, and is read as JSON before it is written again, as the
// attributes are (found by review: fastjson's MarshalTo wrote the
// sender's text back, key order and repeats included).
func TestJSONCompactCanonical(t *testing.T) {
	wrap := func(x string) string {
		return strings.Repeat(`{"d":`, maxJSONDepth) + x + strings.Repeat("}", maxJSONDepth)
	}
	key := "json" + strings.Repeat(".d", maxJSONDepth)
	want := `{"a":[1,"é/"],"b":3}`
	for _, x := range []string{
		`{"b":1,"a":[1,"é/"],"b":3}`,
		`{"a":[1, "\u00e9\/"], "b":3}`,
		`{"b":3,"a":[1,"é/"]}`,
	} {
		ev := &event.Event{Message: wrap(x)}
		if !Apply(Detect(ev), ev, nil) {
			t.Fatalf("%s: not parsed", x)
		}
		if got := ev.Attrs[key]; got != want {
			t.Errorf("%s: %s = %s, want %s", x, key, got, want)
		}
	}
}

// Every rule label is recognized whatever its case (isRuleLabel lowers
// into a fixed buffer: a longer label added to ruleLabels would be missed).
func TestRuleLabelsAnyCase(t *testing.T) {
	for label := range ruleLabels {
		for _, l := range []string{label, strings.ToUpper(label), strings.ToUpper(label[:1]) + label[1:]} {
			if !isRuleLabel(l) {
				t.Errorf("isRuleLabel(%q) = false", l)
			}
		}
	}
	for _, l := range []string{"", "rules", "Rule ", "cs1"} {
		if isRuleLabel(l) {
			t.Errorf("isRuleLabel(%q) = true", l)
		}
	}
}

// A value cut to maxValue is cut between characters, whichever way the
// parser read it: a quoted key=value value, with and without escapes, and
// a CEF header field with and without an escape, a LEEF value. (A LEEF
// header field that long makes the message not LEEF.)
func TestLongValuesCutBetweenCharacters(t *testing.T) {
	for _, wide := range []string{strings.Repeat("é", 3000), "y" + strings.Repeat("é", 3000)} { // the cut falls on either byte
		for _, msg := range []string{
			`a=1 b=2 c="x` + wide + `"`,
			`a=1 b=2 c="x\"` + wide + `"`,
			`CEF:0|x\|` + wide + `|p|1|id|n|5|src=192.0.2.1`,
			`CEF:0|x` + wide + `|p|1|id|n|5|src=192.0.2.1`,
			"LEEF:1.0|v|p|1|id|src=192.0.2.1\tusrName=x" + wide + "\tdst=192.0.2.2",
			"LEEF:2.0|v|p|1|id|^|src=192.0.2.1^usrName=x" + wide,
			`CEF:0|v|p|1|id|n|5|msg=x` + wide,
			`CEF:0|v|p|1|id|n|5|msg=x\=` + wide,
		} {
			ev := &event.Event{Message: msg}
			if !Apply(Detect(ev), ev, nil) {
				t.Fatalf("%.40q: not parsed", msg)
			}
			for k, v := range ev.Attrs {
				if !utf8.ValidString(v) || len(v) > maxValue {
					t.Errorf("%.40q: attribute %q: %d bytes, valid UTF-8 %v", msg, k, len(v), utf8.ValidString(v))
				}
			}
		}
	}
}
