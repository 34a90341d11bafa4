package azureblob

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// seedFixtures adds every fixture line to the corpus with its container's
// index, so the fuzzer starts from each category's real shape.
func seedFixtures(f *testing.F, add func(rec []byte, container uint8)) {
	for i, fx := range fixtures {
		fh, err := os.Open(filepath.Join("testdata", fx.file))
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			add(append([]byte(nil), sc.Bytes()...), uint8(i))
		}
		fh.Close()
	}
}

// FuzzParse: any input either parses into well-formed events or is
// rejected; it never panics, and events carry an id, a source and valid
// addresses.
func FuzzParse(f *testing.F) {
	seedFixtures(f, func(rec []byte, c uint8) { f.Add(rec, c) })
	f.Add([]byte(`{"properties":"{\"Version\":2}"}`), uint8(6))
	f.Add([]byte(`{"identity":"{\"claims\":{}}","properties":"x"}`), uint8(5))
	f.Fuzz(func(t *testing.T, rec []byte, c uint8) {
		fx := fixtures[int(c)%len(fixtures)]
		evs, err := Parse(rec, Origin{Container: fx.container, Key: "k", Received: received})
		if err != nil {
			if evs != nil {
				t.Fatal("events returned with an error")
			}
			return
		}
		for _, ev := range evs {
			if ev.ID == "" || !strings.HasPrefix(ev.Source, "azure.") || ev.Time.IsZero() {
				t.Fatalf("incomplete event %+v", ev)
			}
			for _, ip := range []string{ev.SrcIP, ev.DstIP} {
				if ip != "" {
					if got, _ := cleanIP(ip); got != ip {
						t.Fatalf("address %q not normalized", ip)
					}
				}
			}
			for k, v := range ev.Attrs {
				if v == "" || len(v) > maxAttrLen {
					t.Fatalf("attr %q has %d bytes", k, len(v))
				}
			}
		}
		// Fields read from the record on demand: any shape, bounded.
		fuzzRecordFields.Fill(rec, evs)
		for _, ev := range evs {
			for k, v := range ev.Attrs {
				if strings.HasPrefix(k, recordPrefix) && len(v) > maxRecordValue {
					t.Fatalf("record attr %q has %d bytes", k, len(v))
				}
			}
		}
	})
}

var fuzzRecordFields = NewRecordFields(map[string][]string{
	"":             {"properties", "a.b", "ResultType"},
	"azure.signin": {"status.errorcode", "devicedetail.iscompliant"},
})

// FuzzFlowBlocks splits a flow-log record run into blocks at arbitrary
// points, as a writer could commit them, and checks the block reader's
// splitter: each block parses on its own or is rejected, never panics.
func FuzzFlowBlocks(f *testing.F) {
	seedFixtures(f, func(rec []byte, c uint8) {
		if c == 6 || c == 7 {
			f.Add(rec, uint16(0))
			f.Add(append([]byte(","), rec...), uint16(len(rec)/2))
		}
	})
	f.Fuzz(func(t *testing.T, block []byte, cut uint16) {
		for _, b := range [][]byte{block, block[:int(cut)%(len(block)+1)]} {
			recs, err := blockRecords(b)
			if err != nil {
				continue
			}
			for _, r := range recs {
				if !utf8.Valid(r) && len(r) == 0 {
					t.Fatal("empty record")
				}
				_, _ = Parse(r, Origin{Container: "insights-logs-networksecuritygroupflowevent", Key: "k", Received: received})
			}
		}
	})
}

// FuzzSplitRecords: a JSON line splits into records without panicking, and
// a line that is not a records document comes back whole.
func FuzzSplitRecords(f *testing.F) {
	f.Add([]byte(`{"records":[{"a":1},{"b":2}]}`))
	f.Add([]byte(`{"records":[`))
	f.Add([]byte(`{"time":"x"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		recs := splitRecords(line)
		if len(recs) == 0 && !isRecordsDoc(line) {
			t.Fatal("a plain line vanished")
		}
	})
}
