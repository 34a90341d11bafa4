package payload

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// fuzzFormat: any message, in any of the syslog header's app names, is
// either parsed into a bounded event with normalized addresses, or left
// as it was.
func fuzzFormat(f *testing.F, format string) {
	fh, err := os.Open(filepath.Join("testdata", format+".txt"))
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f.Add(sc.Text(), "")
	}
	fh.Close()
	f.Add("0|v|p|1|id|n|5|src=192.0.2.1", "CEF")
	f.Add("2.0|v|p|1|id|x09|src=192.0.2.1", "LEEF")
	f.Fuzz(func(t *testing.T, msg, app string) {
		ev := &event.Event{Message: msg, App: app, Attrs: map[string]string{"kept": "yes"}}
		before := *ev
		before.Attrs = map[string]string{"kept": "yes"}
		if !Apply(format, ev, nil) {
			if !reflect.DeepEqual(*ev, before) {
				t.Fatalf("not parsed, but the event changed: %+v", ev)
			}
			return
		}
		if ev.Message != msg || ev.Attrs["kept"] != "yes" {
			t.Fatal("the message or an attribute already there was lost")
		}
		if len(ev.Attrs) > maxAttrs+len(event.Schema)+1 {
			t.Fatalf("%d attributes", len(ev.Attrs))
		}
		for k, v := range ev.Attrs {
			if len(v) > maxValue {
				t.Fatalf("attribute %q of %d bytes", k, len(v))
			}
		}
		for _, ip := range []string{ev.SrcIP, ev.DstIP} {
			if ip != "" && cleanIP(ip) != ip {
				t.Fatalf("address %q not normalized", ip)
			}
		}
		if ev.SrcPort < 0 || ev.SrcPort > 65535 || ev.DstPort < 0 || ev.DstPort > 65535 {
			t.Fatalf("ports %d %d", ev.SrcPort, ev.DstPort)
		}
	})
}

func FuzzCEF(f *testing.F)  { fuzzFormat(f, FormatCEF) }
func FuzzLEEF(f *testing.F) { fuzzFormat(f, FormatLEEF) }
func FuzzKV(f *testing.F)   { fuzzFormat(f, FormatKV) }
func FuzzJSON(f *testing.F) { fuzzFormat(f, FormatJSON) }
