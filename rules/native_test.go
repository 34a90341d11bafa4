package rules

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules/sigma/gen"
)

// checkNative fails if a step's closures (native.go) and its expr program
// disagree on ev. It returns how many steps ran natively and how many of
// those held.
func checkNative(t *testing.T, set *Set, ev *event.Event) (native, held int) {
	t.Helper()
	var v vm.VM
	for _, r := range set.Rules {
		for _, st := range r.Steps {
			if st.native == nil {
				continue
			}
			native++
			out, err := v.Run(st.program, ev)
			if err != nil {
				t.Fatalf("rule %s: the program fails on %+v: %v", r.ID, ev, err)
			}
			got := st.native(ev)
			if got != out.(bool) {
				t.Fatalf("rule %s step %s: closures say %v, the program %v, on %+v\n  %s", r.ID, st.Name, got, out, ev, st.Condition)
			}
			if got {
				held++
			}
		}
	}
	return native, held
}

// variants of an event: as is, cased differently, emptied, with ports.
func variants(ev *event.Event) []*event.Event {
	up := *ev
	up.Message, up.User, up.Action, up.MsgID = strings.ToUpper(ev.Message), strings.ToUpper(ev.User), strings.ToUpper(ev.Action), strings.ToUpper(ev.MsgID)
	empty := event.Event{Source: ev.Source, App: ev.App} // Attrs nil
	ports := *ev
	ports.SrcPort, ports.DstPort, ports.Facility, ports.Severity = 40022, 22, 4, 3
	return []*event.Event{ev, &up, &empty, &ports}
}

// The closures agree with the programs for every rule of the shipped pack,
// the Sigma conformance rules and 500 generated Sigma rules, on the
// conformance tests' events and variants of them; and nearly every step
// runs natively.
func TestNativeAgreesWithTheProgram(t *testing.T) {
	dir := t.TempDir()
	if err := gen.Write(dir, 500); err != nil {
		t.Fatal(err)
	}
	var sets []*Set
	for _, o := range []SigmaOptions{{}, {Dirs: []string{dir}}, {Dirs: []string{"sigma/testdata/conformance"}, Status: []string{"test", "stable", "experimental"}}} {
		set, err := Load("", o)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, set)
	}
	var corpus []*event.Event
	for _, tc := range sets[2].Tests {
		for _, ev := range tc.Events {
			corpus = append(corpus, variants(ev)...)
		}
	}
	for i := range 64 {
		corpus = append(corpus, variants(&event.Event{Source: []string{"syslog", "azure.signin", "azure.audit", "azure.activity"}[i%4], App: "sshd",
			Message: fmt.Sprintf("Failed password for u%d from 10.8.%d.1 needle%d Start%d wild-card?%d", i, i, i, i, i),
			User:    fmt.Sprint("u", i), SrcIP: fmt.Sprintf("10.8.%d.%d", i, i), Action: fmt.Sprintf("rx%d123", i), MsgID: fmt.Sprintf("case%d and insensitive", i),
			Attrs: map[string]string{"result_type": strconv.Itoa(50000 + i*7), "country": "DE"}})...)
	}
	total, native, held := 0, 0, 0
	for _, set := range sets {
		for _, r := range set.Rules {
			total += len(r.Steps)
		}
		for _, ev := range corpus {
			n, h := checkNative(t, set, ev)
			native, held = native+n, held+h
		}
	}
	if held < 100 {
		t.Errorf("only %d native steps held: the corpus tests little", held)
	}
	nativeSteps := 0
	for _, set := range sets {
		for _, r := range set.Rules {
			for _, st := range r.Steps {
				if st.native != nil {
					nativeSteps++
				}
			}
		}
	}
	if nativeSteps < total*95/100 {
		t.Errorf("%d of %d steps run natively, want at least 95%%", nativeSteps, total)
	}
}

// nativeConditions use every construct the closures take.
var nativeConditions = []string{
	`facility == 4 && severity <= 3`,
	`string(dst_port) == "22" || (src_port == 0 ? "" : string(src_port)) == "40022"`,
	`num(attrs["n"]) > 5 and num(attrs["n"]) != 7.5`,
	`user in ["root", "admin"] or not (message contains "x")`,
	`lower(user) == "root" && upper(host) != "WEB"`,
	`message startsWith "Failed" or message endsWith "ssh2"`,
	`is_private(src_ip) and !is_public(src_ip)`,
	`cidr(src_ip, "10.0.0.0/8") or cidr(src_ip, "fe80::/10")`,
	`in_list("admins", user) || in_list("admins", host)`,
	`iequals(user, host)`,
	`message matches "(?i)^fail.*ssh2$"`,
	`like(message, "*pass?ord*") and like_cased(attrs["x"], "A*")`,
	`user == host and true`,
}

// optionalConditions use optional chaining, which only the program runs
// (nil is not ""): they must not compile to closures (found by review).
var optionalConditions = []string{`attrs?.x == ""`, `attrs?.x contains ""`, `string(attrs?.x) == ""`}

func nativeSet(t testing.TB) *Set {
	var b strings.Builder
	b.WriteString("lists:\n  admins: [root, Admin]\nrules:\n")
	for i, c := range nativeConditions {
		fmt.Fprintf(&b, "  - {id: n%d, title: T, kind: match, severity: 1, condition: %s}\n", i, strconv.Quote(c))
	}
	set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(b.String())}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestNativeLeavesOptionalChainingToTheProgram(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i, c := range optionalConditions {
		fmt.Fprintf(&b, "  - {id: o%d, title: T, kind: match, severity: 1, condition: %s}\n", i, strconv.Quote(c))
	}
	set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(b.String())}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range set.Rules {
		if r.Steps[0].native != nil {
			t.Errorf("%s runs as closures: %s", r.ID, r.Steps[0].Condition)
		}
	}
}

func TestNativeConstructs(t *testing.T) {
	set := nativeSet(t)
	for _, r := range set.Rules {
		if r.Steps[0].native == nil {
			t.Errorf("%s does not run natively: %s", r.ID, r.Steps[0].Condition)
		}
	}
	held := 0
	for _, ev := range []*event.Event{
		{Facility: 4, Severity: 2, DstPort: 22, User: "root", Host: "ROOT", Message: "Failed password for root ssh2", SrcIP: "10.1.2.3", Attrs: map[string]string{"n": "6", "x": "Abc"}},
		{SrcPort: 40022, User: "Admin", Host: "web", Message: "x", SrcIP: "fe80::1%eth0", Attrs: map[string]string{"n": "7.5"}},
		{User: "admin", SrcIP: "::ffff:10.0.0.1", Attrs: map[string]string{"n": "junk"}},
		{Message: "FAIL over ssh2", SrcIP: "203.0.113.9"},
	} {
		for _, v := range variants(ev) {
			_, h := checkNative(t, set, v)
			held += h
		}
	}
	if held < 15 {
		t.Errorf("only %d conditions held: the events test little", held)
	}
}

// FuzzNative: on any event, the closures and the programs agree.
func FuzzNative(f *testing.F) {
	set := nativeSet(f)
	f.Add("Failed password for root ssh2", "root", "10.1.2.3", "6", 22, 4)
	f.Add("fail\u212a ssh2", "ADMIN", "fe80::1%eth0", "1e3", 0, 0)
	f.Add("", "", "::ffff:192.168.0.1", " 7.5 ", 40022, 7)
	f.Fuzz(func(t *testing.T, msg, user, ip, n string, port, facility int) {
		ev := &event.Event{Message: msg, User: user, Host: strings.ToUpper(user), SrcIP: ip, DstPort: port, SrcPort: port, Facility: facility,
			Attrs: map[string]string{"n": n, "x": msg}}
		checkNative(t, set, ev)
	})
}
