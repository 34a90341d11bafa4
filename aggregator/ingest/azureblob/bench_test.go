package azureblob

import (
	"bytes"
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
