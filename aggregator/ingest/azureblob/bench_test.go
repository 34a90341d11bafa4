package azureblob

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkParse parses one fixture line per category.
//
//	go test -run '^$' -bench BenchmarkParse -benchmem ./aggregator/ingest/azureblob/
func BenchmarkParse(b *testing.B) {
	for _, fx := range fixtures {
		data, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			b.Fatal(err)
		}
		line := data[:bytes.IndexByte(data, '\n')]
		b.Run(fx.container[len("insights-"):], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			o := Origin{Container: fx.container, Key: "bench", Received: received}
			for b.Loop() {
				if _, err := Parse(line, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseRecordFields is BenchmarkParse's sign-in line when the
// rules also read three fields from the record (RecordFields): what a
// rule naming an unnormalized field costs the source.
//
//	go test -run '^$' -bench BenchmarkParseRecordFields -benchmem ./aggregator/ingest/azureblob/
func BenchmarkParseRecordFields(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "signinlogs.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	line := data[:bytes.IndexByte(data, '\n')]
	o := Origin{Container: "insights-logs-signinlogs", Key: "bench", Received: received}
	for _, n := range []int{0, 3} {
		paths := []string{"authenticationprotocol", "devicedetail.iscompliant", "status.errorcode"}[:n]
		rf := NewRecordFields(map[string][]string{SourceSignIn: paths})
		b.Run(fmt.Sprintf("paths=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				evs, err := Parse(line, o)
				if err != nil {
					b.Fatal(err)
				}
				rf.Fill(line, evs)
			}
		})
	}
}
