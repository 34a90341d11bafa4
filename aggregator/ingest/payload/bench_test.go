package payload

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// BenchmarkFormats detects and parses the first sample of each format, and
// a plain sshd line (what detection costs a message in no format).
//
//	go test -run '^$' -bench BenchmarkFormats -benchmem ./aggregator/ingest/payload/
func BenchmarkFormats(b *testing.B) {
	samples := map[string]string{"none": "Failed password for invalid user admin from 203.0.113.9 port 52144 ssh2"}
	for _, f := range Formats {
		fh, err := os.Open(filepath.Join("testdata", f+".txt"))
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Scan()
		samples[f] = sc.Text()
		fh.Close()
	}
	for _, name := range append([]string{"none"}, Formats...) {
		msg := samples[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				ev := event.Event{Message: msg}
				if f := Detect(&ev); f != "" && !Apply(f, &ev, nil) {
					b.Fatal("not parsed")
				}
			}
		})
	}
}
