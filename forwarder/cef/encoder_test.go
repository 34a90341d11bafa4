package cef

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func newTestEncoder(t testing.TB, o Options) *Encoder {
	t.Helper()
	e, err := NewEncoder(o)
	if err != nil {
		t.Fatalf("NewEncoder: %v", err)
	}
	return e
}

func encode(t testing.TB, e *Encoder, a *event.Alert) string {
	t.Helper()
	return string(e.Append(nil, a))
}

func mustParse(t testing.TB, line string) cefLine {
	t.Helper()
	l, err := parseCEF(line)
	if err != nil {
		t.Fatalf("parsing %q: %v", line, err)
	}
	return l
}

// extension returns the raw extension text of an encoded line: what follows
// the seventh unescaped pipe.
func extension(t testing.TB, line string) string {
	t.Helper()
	pipes := 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '|':
			if pipes++; pipes == 7 {
				return line[i+1:]
			}
		}
	}
	t.Fatalf("line %q has fewer than 7 pipes", line)
	return ""
}

func TestNewEncoder(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		prefix  string   // line prefix when valid
		wantErr []string // substrings of the error, all required
	}{
		{name: "defaults", prefix: "CEF:0|Outpost|Outpost|dev|"},
		{name: "identity", opts: Options{Vendor: "ACME", Product: "SIEM Agg", Version: "1.2.3"},
			prefix: "CEF:0|ACME|SIEM Agg|1.2.3|"},
		{name: "escaped identity", opts: Options{Vendor: `A|B\C`, Product: "x=y"},
			prefix: `CEF:0|A\|B\\C|x=y|dev|`},
		{name: "vendor at limit once escaped", opts: Options{Vendor: strings.Repeat("|", 31) + "a"},
			prefix: "CEF:0|" + strings.Repeat(`\|`, 31) + "a|Outpost|dev|"},
		{name: "vendor over limit once escaped", opts: Options{Vendor: strings.Repeat("|", 32)},
			wantErr: []string{"vendor", "longer than 63"}},
		{name: "version over limit", opts: Options{Version: strings.Repeat("1", 32)},
			wantErr: []string{"version", "longer than 31"}},
		{name: "line breaks", opts: Options{Vendor: "a\nb", Product: "a\rb", DeviceHost: "h\n"},
			wantErr: []string{"vendor", "product", "device host", "line break"}},
		{name: "blank product", opts: Options{Product: "  "}, wantErr: []string{"product", "blank"}},
		{name: "invalid UTF-8", opts: Options{Version: "\xff"}, wantErr: []string{"version", "UTF-8"}},
		{name: "device external id too long", opts: Options{DeviceExternalID: strings.Repeat("é", 128)},
			wantErr: []string{"device external id", "longer than 255"}},
		{name: "device host too long", opts: Options{DeviceHost: strings.Repeat("h", 101)},
			wantErr: []string{"device host", "longer than 100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEncoder(tt.opts)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("NewEncoder(%+v) succeeded, want error", tt.opts)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("NewEncoder(%+v): %v", tt.opts, err)
			}
			line := encode(t, e, &event.Alert{RuleID: "r", Title: "t"})
			if !strings.HasPrefix(line, tt.prefix) {
				t.Errorf("line %q does not start with %q", line, tt.prefix)
			}
			mustParse(t, line)
		})
	}
}

func TestDeviceKeys(t *testing.T) {
	e := newTestEncoder(t, Options{DeviceExternalID: " outpost-1 ", DeviceHost: "agg=01"})
	ext := extension(t, encode(t, e, &event.Alert{ID: "a1", RuleID: "r", Title: "t"}))
	if want := `externalId=a1 deviceExternalId=outpost-1 dvchost=agg\=01 msg=t`; ext != want {
		t.Errorf("extension = %q, want %q", ext, want)
	}
	// With nothing before them, the device keys open the extension.
	ext = extension(t, encode(t, e, &event.Alert{}))
	if want := `deviceExternalId=outpost-1 dvchost=agg\=01`; ext != want {
		t.Errorf("extension = %q, want %q", ext, want)
	}
}

func TestHeaderEscaping(t *testing.T) {
	e := newTestEncoder(t, Options{})
	tests := []struct {
		name, title, want string
	}{
		{"plain", "SSH brute force", "SSH brute force"},
		{"pipe", "a|b", `a\|b`},
		{"backslash", `C:\Windows`, `C:\\Windows`},
		{"backslash before pipe", `a\|b`, `a\\\|b`},
		{"trailing backslash", `a\`, `a\\`},
		{"equals is literal", "a=b", "a=b"},
		{"LF", "a\nb", "a b"},
		{"CR", "a\rb", "a b"},
		{"CRLF is one space", "a\r\nb", "a b"},
		{"LFCR is two", "a\n\rb", "a  b"},
		{"spaces kept", "  a  ", "  a  "},
		{"invalid UTF-8", "a\xff\xfeb", "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := encode(t, e, &event.Alert{RuleID: tt.title, Title: tt.title, Severity: 5})
			want := "CEF:0|Outpost|Outpost|dev|" + tt.want + "|" + tt.want + "|5|"
			if !strings.HasPrefix(line, want) {
				t.Fatalf("line %q does not start with %q", line, want)
			}
			l := mustParse(t, line)
			if w := wantHeader(tt.title, 512); l.header[5] != w {
				t.Errorf("parsed name %q, want %q", l.header[5], w)
			}
		})
	}
}

func TestExtensionEscaping(t *testing.T) {
	e := newTestEncoder(t, Options{})
	tests := []struct {
		name, value string
		want        string // raw cs5 value as written
	}{
		{"plain", "brute force", "brute force"},
		{"backslash", `C:\Windows`, `C:\\Windows`},
		{"equals", "a=b", `a\=b`},
		{"looks like a pair", "x y=z", `x y\=z`},
		{"pipe not escaped", "a|b", "a|b"},
		{"LF", "a\nb", `a\nb`},
		{"CR", "a\rb", `a\nb`},
		{"CRLF is one line break", "a\r\nb", `a\nb`},
		{"LFCR is two", "a\n\rb", `a\n\nb`},
		{"literal backslash n", `a\nb`, `a\\nb`},
		{"backslash before equals", `a\=b`, `a\\\=b`},
		{"trailing backslash", `a\`, `a\\`},
		{"leading and trailing space", "  a b  ", "a b"},
		{"trailing line break", "a\r\n", "a"},
		{"inner spaces kept", "a    b", "a    b"},
		{"invalid UTF-8", "\xffa\xc3", "\uFFFDa\uFFFD"},
		{"unicode", "naïve 🙂", "naïve 🙂"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := encode(t, e, &event.Alert{RuleID: "r", Description: tt.value})
			ext := extension(t, line)
			if want := "cs5Label=Description cs5=" + tt.want; !strings.HasSuffix(ext, want) {
				t.Errorf("extension %q does not end with %q", ext, want)
			}
			got, _ := mustParse(t, line).value("cs5")
			if want := wantValue(tt.value, 4000); got != want {
				t.Errorf("parsed cs5 = %q, want %q", got, want)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	tests := []struct {
		name  string
		alert event.Alert
		key   string // header field index as "h4", "h5", or an extension key
		want  string // parsed value
		cuts  uint64
	}{
		{name: "externalId at limit", alert: event.Alert{ID: strings.Repeat("a", 40)},
			key: "externalId", want: strings.Repeat("a", 40)},
		{name: "externalId over limit", alert: event.Alert{ID: strings.Repeat("a", 41)},
			key: "externalId", want: strings.Repeat("a", 40), cuts: 1},
		{name: "two-byte runes", alert: event.Alert{ID: "a" + strings.Repeat("é", 30)},
			key: "externalId", want: "a" + strings.Repeat("é", 19), cuts: 1},
		{name: "four-byte runes", alert: event.Alert{ID: "ab" + strings.Repeat("🙂", 10)},
			key: "externalId", want: "ab" + strings.Repeat("🙂", 9), cuts: 1},
		{name: "escapes count unescaped", alert: event.Alert{ID: strings.Repeat("=", 40)},
			key: "externalId", want: strings.Repeat("=", 40)},
		{name: "CRLF counts one byte", alert: event.Alert{ID: "a" + strings.Repeat("\r\nb", 19) + "\r\n"},
			key: "externalId", want: "a" + strings.Repeat("\nb", 19)},
		{name: "trailing space after cut trimmed", alert: event.Alert{ID: strings.Repeat("a", 38) + "   b"},
			key: "externalId", want: strings.Repeat("a", 38), cuts: 1},
		{name: "trailing space beyond limit is not a cut", alert: event.Alert{ID: strings.Repeat("a", 40) + "     "},
			key: "externalId", want: strings.Repeat("a", 40)},
		{name: "leading space not counted", alert: event.Alert{ID: "     " + strings.Repeat("a", 40)},
			key: "externalId", want: strings.Repeat("a", 40)},
		{name: "invalid UTF-8 counts as U+FFFD", alert: event.Alert{ID: strings.Repeat("a", 38) + "\xff"},
			key: "externalId", want: strings.Repeat("a", 38), cuts: 1},
		{name: "name counts escaped bytes", alert: event.Alert{Title: strings.Repeat("|", 300)},
			key: "h5", want: strings.Repeat("|", 256), cuts: 1},
		{name: "name never splits an escape", alert: event.Alert{Title: "a" + strings.Repeat(`\`, 300)},
			key: "h5", want: "a" + strings.Repeat(`\`, 255), cuts: 1},
		{name: "name on rune boundary", alert: event.Alert{Title: strings.Repeat("é", 300)},
			key: "h5", want: strings.Repeat("é", 256), cuts: 1},
		{name: "name with emoji", alert: event.Alert{Title: "a" + strings.Repeat("🙂", 200)},
			key: "h5", want: "a" + strings.Repeat("🙂", 127), cuts: 1},
		{name: "class id", alert: event.Alert{RuleID: strings.Repeat("r", 1024), Title: "t"},
			key: "h4", want: strings.Repeat("r", 1023), cuts: 1},
		{name: "event ids cut between ids", alert: event.Alert{EventIDs: manyIDs(300)},
			key: "cs4", want: strings.Join(manyIDs(300)[:235], ","), cuts: 1},
		{name: "tags skip blanks", alert: event.Alert{Tags: []string{" T1110 ", "", "  ", "T1078"}},
			key: "cs3", want: "T1110,T1078"},
		{name: "user", alert: event.Alert{Fields: map[string]string{"user": strings.Repeat("ü", 600)}},
			key: "suser", want: strings.Repeat("ü", 511), cuts: 1},
		{name: "protocol", alert: event.Alert{Fields: map[string]string{"protocol": strings.Repeat("t", 32)}},
			key: "proto", want: strings.Repeat("t", 31), cuts: 1},
		{name: "cs6", alert: event.Alert{Fields: map[string]string{"zz": strings.Repeat("é", 2100)}},
			key: "cs6", want: "zz=" + strings.Repeat("é", 1998), cuts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEncoder(t, Options{})
			line := encode(t, e, &tt.alert)
			l := mustParse(t, line)
			var got string
			switch tt.key {
			case "h4":
				got = l.header[4]
			case "h5":
				got = l.header[5]
			default:
				got, _ = l.value(tt.key)
			}
			if got != tt.want {
				t.Errorf("%s = %q (%d bytes), want %q (%d bytes)", tt.key, got, len(got), tt.want, len(tt.want))
			}
			if n := e.Truncations(); n != tt.cuts {
				t.Errorf("Truncations() = %d, want %d", n, tt.cuts)
			}
		})
	}
}

// manyIDs returns n event ids of 16 bytes each.
func manyIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("evt-%012d", i)
	}
	return ids
}

func TestSeverity(t *testing.T) {
	e := newTestEncoder(t, Options{})
	tests := []struct{ in, cef, syslog int }{
		{-5, 0, 5}, {0, 0, 5}, {3, 3, 5}, {4, 4, 4}, {6, 6, 4},
		{7, 7, 3}, {8, 8, 3}, {9, 9, 2}, {10, 10, 2}, {11, 10, 2}, {1 << 40, 10, 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			l := mustParse(t, encode(t, e, &event.Alert{RuleID: "r", Severity: tt.in}))
			if want := fmt.Sprint(tt.cef); l.header[6] != want {
				t.Errorf("header severity %q, want %q", l.header[6], want)
			}
			if got := SyslogSeverity(tt.in); got != tt.syslog {
				t.Errorf("SyslogSeverity(%d) = %d, want %d", tt.in, got, tt.syslog)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	e := newTestEncoder(t, Options{})
	tests := []struct {
		name, src, dst string
		want           map[string]string // extension keys expected; "" means absent
	}{
		{name: "IPv4", src: "203.0.113.5", dst: " 10.0.0.1 ",
			want: map[string]string{"src": "203.0.113.5", "dst": "10.0.0.1", "c6a3": "", "cs6": ""}},
		{name: "IPv6", src: "2001:DB8:0:0::1", dst: "fe80::1",
			want: map[string]string{"src": "", "dst": "", "c6a3": "2001:db8::1", "c6a3Label": "Source IPv6 Address",
				"c6a4": "fe80::1", "c6a4Label": "Destination IPv6 Address"}},
		{name: "IPv4-mapped IPv6", src: "::ffff:192.0.2.1",
			want: map[string]string{"src": "192.0.2.1", "c6a3": ""}},
		{name: "zoned IPv6", src: "fe80::1%eth0",
			want: map[string]string{"src": "", "c6a3": "", "cs6": "src_ip=fe80::1%eth0"}},
		{name: "garbage", src: "not-an-ip", dst: "10.0.0.256",
			want: map[string]string{"src": "", "dst": "", "cs6": "dst_ip=10.0.0.256; src_ip=not-an-ip"}},
		{name: "leading zeros", src: "010.0.0.1",
			want: map[string]string{"src": "", "cs6": "src_ip=010.0.0.1"}},
		{name: "empty", src: "", dst: "   ",
			want: map[string]string{"src": "", "dst": "", "c6a3": "", "cs6": "", "cs6Label": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustParse(t, encode(t, e, &event.Alert{Fields: map[string]string{"src_ip": tt.src, "dst_ip": tt.dst}}))
			for key, want := range tt.want {
				got, ok := l.value(key)
				if want == "" && ok {
					t.Errorf("%s = %q, want it absent", key, got)
				} else if want != "" && got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
		})
	}
}

func TestPorts(t *testing.T) {
	e := newTestEncoder(t, Options{})
	tests := []struct{ in, want string }{
		{"22", "22"}, {"0", "0"}, {"65535", "65535"}, {" 443 ", "443"}, {"0080", "80"},
		{"65536", ""}, {"-1", ""}, {"+22", ""}, {"22.0", ""}, {"0x16", ""}, {"1_000", ""}, {"ssh", ""}, {"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			l := mustParse(t, encode(t, e, &event.Alert{Fields: map[string]string{"src_port": tt.in, "dst_port": tt.in}}))
			spt, _ := l.value("spt")
			dpt, _ := l.value("dpt")
			if spt != tt.want || dpt != tt.want {
				t.Errorf("spt, dpt = %q, %q, want %q", spt, dpt, tt.want)
			}
			cs6, _ := l.value("cs6")
			kept := strings.Contains(cs6, "src_port=") && strings.Contains(cs6, "dst_port=")
			if wantKept := tt.want == "" && strings.TrimSpace(tt.in) != ""; kept != wantKept {
				t.Errorf("cs6 = %q; ports kept there: %v, want %v", cs6, kept, wantKept)
			}
		})
	}
}

func TestOmitEmpty(t *testing.T) {
	e := newTestEncoder(t, Options{})
	blank := " \t\r\n "
	a := &event.Alert{
		ID: blank, RuleID: "r", Title: "t", Description: blank, Kind: blank, Key: blank,
		Tags: []string{blank, ""}, EventIDs: []string{""},
		Fields: map[string]string{
			"user": blank, "host": "", "protocol": blank, "action": blank, "outcome": blank, "app": blank,
			"src_ip": blank, "dst_ip": "", "src_port": blank, "dst_port": "", "extra": blank,
		},
	}
	line := encode(t, e, a)
	if want := "CEF:0|Outpost|Outpost|dev|r|t|0|msg=t"; line != want {
		t.Errorf("line = %q, want %q", line, want)
	}
	line = encode(t, e, &event.Alert{})
	if want := "CEF:0|Outpost|Outpost|dev|||0|"; line != want {
		t.Errorf("empty alert: line = %q, want %q", line, want)
	}
	l := mustParse(t, line)
	if len(l.pairs) != 0 {
		t.Errorf("empty alert has pairs %q", l.pairs)
	}
}

func TestTimes(t *testing.T) {
	e := newTestEncoder(t, Options{})
	first := time.Date(2026, 11, 23, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	last := first.Add(90*time.Second + 250*time.Millisecond)
	tests := []struct {
		name        string
		first, last time.Time
		want        string
	}{
		{"both", first, last, "rt=1795424490250 start=1795424400000 end=1795424490250 cnt=5 " +
			"msg=5 events from src_ip\\=203.0.113.5 between 2026-11-23T09:00:00Z and 2026-11-23T09:01:30Z"},
		{"same", first, first, "rt=1795424400000 start=1795424400000 end=1795424400000 cnt=5 " +
			"msg=5 events from src_ip\\=203.0.113.5 at 2026-11-23T09:00:00Z"},
		{"no first", time.Time{}, last, "rt=1795424490250 end=1795424490250 cnt=5 " +
			"msg=5 events from src_ip\\=203.0.113.5 at 2026-11-23T09:01:30Z"},
		{"none", time.Time{}, time.Time{}, "cnt=5 msg=5 events from src_ip\\=203.0.113.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &event.Alert{Count: 5, GroupBy: []string{"src_ip"}, Key: "src_ip=203.0.113.5", FirstSeen: tt.first, LastSeen: tt.last}
			ext := extension(t, encode(t, e, a))
			if want := tt.want + " cs1Label=Group Key cs1=src_ip\\=203.0.113.5"; ext != want {
				t.Errorf("extension =\n%q, want\n%q", ext, want)
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	e := newTestEncoder(t, Options{})
	fields := make(map[string]string)
	for i := range 64 {
		fields[fmt.Sprintf("attr_%02d", i)] = fmt.Sprintf("value %d = %d", i, i*i)
	}
	fields["src_ip"] = "203.0.113.5"
	fields["user"] = "root"
	a := &event.Alert{ID: "a1", RuleID: "r", Title: "t", Count: 3, Fields: fields}
	want := e.Append(nil, a)

	// Same content, inserted in the opposite order.
	reversed := make(map[string]string)
	for i := 63; i >= 0; i-- {
		reversed[fmt.Sprintf("attr_%02d", i)] = fields[fmt.Sprintf("attr_%02d", i)]
	}
	reversed["user"], reversed["src_ip"] = "root", "203.0.113.5"
	b := *a
	b.Fields = reversed

	for i := range 50 {
		if got := e.Append(nil, a); !bytes.Equal(got, want) {
			t.Fatalf("encoding %d differs:\n%s\n%s", i, got, want)
		}
		if got := e.Append(nil, &b); !bytes.Equal(got, want) {
			t.Fatalf("encoding %d of reordered fields differs:\n%s\n%s", i, got, want)
		}
	}
	cs6, _ := mustParse(t, string(want)).value("cs6")
	if !strings.HasPrefix(cs6, "attr_00=value 0 = 0; attr_01=value 1 = 1; ") {
		t.Errorf("cs6 not in key order: %q", cs6)
	}
}

func TestAppendKeepsDst(t *testing.T) {
	e := newTestEncoder(t, Options{})
	a := &event.Alert{ID: "a1", RuleID: "r", Title: "t", Description: "d"}
	dst := []byte("<134>1 - host outpost - CEF - ")
	got := e.Append(dst, a)
	if want := string(dst) + encode(t, e, a); string(got) != want {
		t.Errorf("Append kept %q, want %q", got, want)
	}
}

func TestConcurrentAppend(t *testing.T) {
	e := newTestEncoder(t, Options{})
	a := &event.Alert{ID: strings.Repeat("x", 50), RuleID: "r", Fields: map[string]string{"k": "v", "user": "u"}}
	want := encode(t, e, a)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			var buf []byte
			for range 100 {
				buf = e.Append(buf[:0], a)
				if string(buf) != want {
					t.Errorf("concurrent Append = %q, want %q", buf, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := e.Truncations(); got != 801 {
		t.Errorf("Truncations() = %d, want 801", got)
	}
}

// roundTripValues are raw strings that exercise every escaping and trimming
// rule; TestRoundTrip puts each into every text input of an alert.
var roundTripValues = []string{
	"plain",
	`back\slash`, `trailing\`, `\\double`, `\n literal`, `\=`,
	"a=b", "k=v x=y", "=leading", "trailing=",
	"pipe|here", `pipe\|escaped`,
	"line\nfeed", "carriage\rreturn", "crlf\r\nline", "lfcr\n\rline", "\r\n\r\n",
	"  spaced  ", "\ttabbed\t", "in  ner", " ", "",
	"é", "naïve café", "🙂 emoji 🙂", "日本語", "\u00a0nbsp\u00a0",
	"\xff\xfe invalid", "ok\xc3", "\xe2\x82 partial",
	"cs1=spoof msg=spoof", " key=value", "x \\ y = z | w",
}

func TestRoundTrip(t *testing.T) {
	o := Options{Vendor: "V", Product: "P", Version: "1", DeviceExternalID: "id", DeviceHost: "h"}
	e := newTestEncoder(t, o)
	for _, v := range roundTripValues {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			a := &event.Alert{
				ID: v, RuleID: v, Title: v, Description: v, Kind: v, Key: v,
				Severity: 7, Count: 2, GroupBy: []string{v, "user"},
				Tags: []string{v, "T1110"}, EventIDs: []string{"e1", v},
				FirstSeen: time.UnixMilli(1795424400000), LastSeen: time.UnixMilli(1795424490000),
				Fields: map[string]string{
					"user": v, "host": v, "protocol": v, "action": v, "outcome": v, "app": v,
					"src_ip": v, "dst_port": v, "custom": v, v: "as key",
				},
			}
			checkLine(t, o, a, e.Append(nil, a))
		})
	}
}

// checkLine checks an encoded line against the reference model.
func checkLine(t testing.TB, o Options, a *event.Alert, out []byte) {
	t.Helper()
	if bytes.ContainsAny(out, "\r\n") {
		t.Fatalf("raw line break in %q", out)
	}
	if !bytes.HasPrefix(out, []byte("CEF:0|")) {
		t.Fatalf("line %q does not start with CEF:0|", out)
	}
	l, err := parseCEF(string(out))
	if err != nil {
		t.Fatalf("parsing %q: %v", out, err)
	}
	wantHeader, wantPairs := wantLine(o, a)
	if l.header != wantHeader {
		t.Errorf("header:\n got %q\nwant %q", l.header, wantHeader)
	}
	if len(l.pairs) != len(wantPairs) {
		t.Errorf("pairs:\n got %q\nwant %q", l.pairs, wantPairs)
		return
	}
	for i := range l.pairs {
		if l.pairs[i] != wantPairs[i] {
			t.Errorf("pair %d: got %q, want %q", i, l.pairs[i], wantPairs[i])
		}
	}
}
