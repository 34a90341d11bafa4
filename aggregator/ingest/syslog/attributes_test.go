package syslog

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// Over TCP, the source keeps the attributes SetAttributes names and the
// schema's fields (ingest.syslog.attributes: read), or every attribute
// (all); the message is kept whole either way.
func TestSourceKeepsTheAttributesRulesRead(t *testing.T) {
	const msg = `<134>1 2026-12-04T10:00:00Z fw-01 - - - - CEF:0|Example|Firewall|1.0|100|Allowed|3|src=198.51.100.7 dst=10.0.0.4 dpt=443 act=allow cs3Label=Zone cs3=dmz cs4=untouched`
	for _, tc := range []struct {
		setting string
		want    map[string]string // attribute -> value, "" for absent
	}{
		{AttributesRead, map[string]string{"cef.cs3": "dmz", "device_vendor": "Example", "event_code": "100", "cef.cs4": "", "cef.cs3Label": "", "cef.name": ""}},
		{AttributesAll, map[string]string{"cef.cs3": "dmz", "device_vendor": "Example", "event_code": "100", "cef.cs4": "untouched", "cef.cs3Label": "Zone", "cef.name": "Allowed"}},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			sink := &memSink{}
			ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, Attributes: tc.setting}, sink, func(s *Source) {
				s.SetAttributes(map[string]bool{"cef.cs3": true}, false)
			})
			c := dial(t, "tcp", ts.tcpAddr())
			write(t, c, octet(msg))
			evs, _ := sink.wait(t, 1, 0)
			ev := evs[0]
			if ev.SrcIP != "198.51.100.7" || ev.DstPort != 443 || ev.Action != "allow" || len(ev.Message) < 100 {
				t.Errorf("fields: %+v", ev)
			}
			for k, v := range tc.want {
				if got, ok := ev.Attrs[k]; got != v || ok != (v != "") {
					t.Errorf("attrs[%q] = %q (present %v), want %q", k, got, ok, v)
				}
			}
			wantDropped := 0.0
			if tc.setting == AttributesRead {
				wantDropped = 6 // cs3Label, cs4, and the header's version, device version, name, severity
			}
			if got := ts.metric(t, "outpost_syslog_attributes_dropped_total", nil); got != wantDropped {
				t.Errorf("dropped = %v, want %v", got, wantDropped)
			}
		})
	}
}

// Every attribute Outpost's own normalization reads after the parse is
// one the parse keeps whatever the rules read: the Windows fields
// windows.go reads (w("Name"), winPrefix+"Name", "json.<key>"), the audit
// keys linux.go reads (a("key"), "kv.<key>") and the keys audit.go joins
// on. A name read there and missing from attributes.go's lists would give
// the event other fields with attributes: read than with all (found by
// review: attributes.go named this test, which did not exist).
func TestReadKeepsTheNormalization(t *testing.T) {
	f := newAttrFilter(map[string]bool{})
	for _, file := range []string{"windows.go", "linux.go", "audit.go", "normalize.go"} {
		tree, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		lit := func(e ast.Expr) (string, bool) {
			b, ok := e.(*ast.BasicLit)
			if !ok || b.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(b.Value)
			return s, err == nil
		}
		n := 0
		prefixOf := map[ast.Node]bool{} // "kv.a" in "kv.a"+strconv.Itoa(i): a0..a63, checked below
		ast.Inspect(tree, func(node ast.Node) bool {
			switch x := node.(type) {
			case *ast.CallExpr: // w("Name"), a("key"), setWin("Name", v)
				id, ok := x.Fun.(*ast.Ident)
				if ok && file == "windows.go" && (id.Name == "setWin" || id.Name == "setWinIf") && len(x.Args) == 2 {
					if s, ok := lit(x.Args[0]); ok && !f.win[s] {
						t.Errorf("%s: %s(%q): the parse does not keep %s", file, id.Name, s, s)
					}
					n++
				}
				if !ok || len(x.Args) != 1 {
					break
				}
				s, ok := lit(x.Args[0])
				switch {
				case !ok:
				case id.Name == "w" && !isKeptSD(f, "NXLOG@14506", s):
					t.Errorf("%s: w(%q): the parse does not keep it", file, s)
				case id.Name == "a" && !isKept(f, "kv.", s):
					t.Errorf("%s: a(%q): the parse does not keep kv.%s", file, s, s)
				}
				n++
			case *ast.BinaryExpr: // winPrefix+"Name"
				if x.Op == token.ADD {
					prefixOf[x.X] = true
				}
				if id, ok := x.X.(*ast.Ident); ok && id.Name == "winPrefix" {
					if s, ok := lit(x.Y); ok && !f.win[s] {
						t.Errorf("%s: win.%s: the parse does not keep %s", file, s, s)
					}
					n++
				}
			case *ast.BasicLit: // "json.<key>", "kv.<key>"
				s, ok := lit(x)
				if !ok || prefixOf[x] {
					break
				}
				for _, prefix := range []string{"json.", "kv."} {
					if k, ok := strings.CutPrefix(s, prefix); ok && k != "" && !strings.HasSuffix(k, ".") && !isKept(f, prefix, k) && !f.keys[s] {
						t.Errorf("%s: %q: the parse does not keep it", file, s)
					}
				}
			}
			return true
		})
		if file == "linux.go" && !isKept(f, "kv.", "a63") {
			t.Error("linux.go: kv.a63 (the last EXECVE argument read): the parse does not keep it")
		}
		if n == 0 && file != "normalize.go" {
			t.Errorf("%s: no read found: the test no longer sees how the file reads attributes", file)
		}
	}
}

func isKeptSD(f *attrFilter, id, name string) bool {
	attr, aside := f.keepSD(id, name)
	return attr || aside
}

func isKept(f *attrFilter, prefix, key string) bool {
	attr, aside := f.keep(prefix, key)
	return attr || aside
}
