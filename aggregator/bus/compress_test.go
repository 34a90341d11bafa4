package bus

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// sshdEvents are events as the syslog source makes them of an sshd brute
// force from many addresses: what EVENTS carries under attack.
func sshdEvents(n int) []*event.Event {
	at := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	var evs []*event.Event
	for i := range n {
		ip := fmt.Sprintf("198.51.%d.%d", i/250%250, i%250)
		evs = append(evs, &event.Event{
			ID: fmt.Sprintf("01JEV%021d", i), Source: "syslog", Time: at.Add(time.Duration(i) * time.Millisecond), Received: at,
			Sender: "127.0.0.1", Host: fmt.Sprintf("vm-web-%02d", i%20), App: "sshd", ProcID: fmt.Sprint(4000 + i%900),
			Facility: 4, Severity: 6, Message: fmt.Sprintf("Failed password for invalid user admin%d from %s port %d ssh2", i%50, ip, 40000+i%20000),
			Category: "authentication", Action: "logon", Outcome: "failure", User: fmt.Sprintf("admin%d", i%50),
			SrcIP: ip, SrcPort: 40000 + i%20000, Protocol: "ssh", Attrs: map[string]string{"auth_method": "password"},
		})
	}
	return evs
}

// EVENTS batches are compressed, to a fraction of their bytes, and read
// back as the same events.
func TestBatchesAreCompressed(t *testing.T) {
	evs := sshdEvents(1000)
	var items []item
	plain := 1
	for _, ev := range evs {
		data := event.AppendEvent(nil, ev)
		plain += len(data) + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(len(data)))
		items = append(items, item{subject: "events.syslog", data: data})
	}
	msgs := pack(items)
	if len(msgs) != 1 {
		t.Fatalf("pack made %d messages", len(msgs))
	}
	data := msgs[0].msg.Data
	if data[0] != batchS2 || len(data)*2 > plain {
		t.Fatalf("message of %d bytes (first byte %#x) for a batch of %d", len(data), data[0], plain)
	}
	t.Logf("%d events: %d bytes, compressed %d (%.1fx)", len(evs), plain, len(data), float64(plain)/float64(len(data)))
	i := 0
	err := DecodeEvents(data, func(ev *event.Event) error {
		want := evs[i]
		if ev.ID != want.ID || ev.Message != want.Message || ev.SrcIP != want.SrcIP || !ev.Time.Equal(want.Time) || ev.Attrs["auth_method"] != "password" {
			t.Fatalf("event %d: %+v, want %+v", i, ev, want)
		}
		i++
		return nil
	}, func(_ []byte, err error) error { t.Errorf("bad record: %v", err); return nil })
	if err != nil || i != len(evs) {
		t.Fatalf("decoded %d of %d events: %v", i, len(evs), err)
	}
	if cap(data) != batchCap {
		t.Errorf("compressed batch of capacity %d, not the pool's %d: FreeBatch would not take it back", cap(data), batchCap)
	}
}

// Compress leaves as they are a batch too small to gain, one that does not
// shrink, and JSON lines.
func TestCompressLeavesWhatDoesNotGain(t *testing.T) {
	small := AppendRecord(NewBatch(), event.AppendEvent(nil, &event.Event{ID: "1"}))
	if got := Compress(small); &got[0] != &small[0] {
		t.Error("a batch of one small event was compressed")
	}
	noise := make([]byte, 64<<10)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(noise)
	random := AppendRecord(NewBatch(), noise)
	if got := Compress(random); &got[0] != &random[0] || got[0] != batchBinary {
		t.Error("a batch that does not shrink was compressed")
	}
	lines := bytes.Repeat([]byte(`{"id":"1"}`+"\n"), 1000)
	if got := Compress(lines); &got[0] != &lines[0] {
		t.Error("JSON lines were compressed")
	}
}

// A compressed batch that does not decompress, or claims to decompress to
// more than maxDecompressed, is one bad record, never a panic or a huge
// allocation.
func TestDecodeDamagedCompressedBatch(t *testing.T) {
	var batch []byte
	for _, ev := range sshdEvents(200) {
		batch = AppendRecord(batch, event.AppendEvent(nil, ev))
	}
	good := Compress(batch)
	if good[0] != batchS2 {
		t.Fatal("not compressed")
	}
	forged := append([]byte{batchS2}, binary.AppendUvarint(nil, 1<<40)...)
	forged = append(forged, good[len(good)-100:]...)
	cut := good[:len(good)/2]
	flipped := bytes.Clone(good)
	flipped[len(flipped)/3] ^= 0xff
	empty := []byte{batchS2, 0}
	for name, data := range map[string][]byte{"forged length": forged, "cut short": cut, "a byte flipped": flipped, "empty": empty} {
		var bad, n int
		var kept []byte
		err := DecodeEvents(data, func(*event.Event) error { n++; return nil }, func(rec []byte, _ error) error {
			bad++
			kept = bytes.Clone(rec)
			return nil
		})
		if err != nil || bad != 1 {
			t.Errorf("%s: %d events, %d bad, err %v; want one bad record", name, n, bad, err)
		}
		if name != "a byte flipped" && !bytes.Equal(kept, data) {
			t.Errorf("%s: the bad record is %d bytes, not the %d of the message", name, len(kept), len(data))
		}
	}
}

// FuzzDecodeBatch: any message reads without a panic, a compressed batch
// bounded; and any records, batched and compressed, read back the same.
func FuzzDecodeBatch(f *testing.F) {
	var batch []byte
	for _, ev := range sshdEvents(30) {
		batch = AppendRecord(batch, event.AppendEvent(nil, ev))
	}
	f.Add(batch)
	f.Add(Compress(bytes.Clone(batch)))
	f.Add([]byte(`{"id":"1"}` + "\n" + `{"id":`))
	f.Add(append([]byte{batchS2}, s2.Encode(nil, bytes.Repeat([]byte{3, 'a', 'b', 'c'}, 400))...))
	f.Add([]byte{batchS2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var recs [][]byte
		_ = records(data, false, func(rec []byte, _ bool) error { recs = append(recs, rec); return nil },
			func([]byte, error) error { return nil })
		for _, rec := range recs {
			if len(rec) > maxDecompressed {
				t.Fatalf("a record of %d bytes", len(rec))
			}
		}
		// The message's bytes as one record, then cut into records.
		var b []byte
		for i := 0; i < len(data); i += 37 {
			b = AppendRecord(b, data[i:min(i+37, len(data))])
		}
		if b == nil {
			return
		}
		var back []byte
		err := records(Compress(b), true, func(rec []byte, _ bool) error { back = append(back, rec...); return nil },
			func(_ []byte, err error) error { return err })
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("records of %x read back as %x, %v", data, back, err)
		}
	})
}

// BenchmarkCompress: a batch of 1,000 sshd events (242 KB), compressed.
func BenchmarkCompress(b *testing.B) {
	var batch []byte
	for _, ev := range sshdEvents(1000) {
		batch = AppendRecord(batch, event.AppendEvent(nil, ev))
	}
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		in := append(NewBatch(), batch...)
		FreeBatch(Compress(in))
	}
}

// BenchmarkDecodeCompressed: that batch decompressed and decoded.
func BenchmarkDecodeCompressed(b *testing.B) {
	var batch []byte
	for _, ev := range sshdEvents(1000) {
		batch = AppendRecord(batch, event.AppendEvent(nil, ev))
	}
	for _, c := range []struct {
		name string
		data []byte
	}{{"plain", batch}, {"s2", Compress(bytes.Clone(batch))}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(batch)))
			for b.Loop() {
				_ = DecodeEvents(c.data, func(*event.Event) error { return nil }, func([]byte, error) error { return nil })
			}
		})
	}
}

// A compressed EVENTS batch is decompressed into a reused buffer: the
// strings of the events decoded from it stay theirs after the next batch
// is decompressed into the same buffer.
func TestDecodedEventsOutliveTheirBuffer(t *testing.T) {
	evs := sshdEvents(400)
	batch := func(evs []*event.Event) []byte {
		var b []byte
		for _, ev := range evs {
			b = AppendRecord(b, event.AppendEvent(nil, ev))
		}
		return Compress(b)
	}
	first, second := batch(evs[:200]), batch(evs[200:])
	var kept []string
	keep := func(ev *event.Event) error { kept = append(kept, ev.ID, ev.Message); return nil }
	bad := func(_ []byte, err error) error { return err }
	if err := DecodeEvents(first, keep, bad); err != nil {
		t.Fatal(err)
	}
	if err := DecodeEvents(second, func(*event.Event) error { return nil }, bad); err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs[:200] {
		if kept[2*i] != ev.ID || kept[2*i+1] != ev.Message {
			t.Fatalf("event %d reads %q %q after the next batch, want %q %q", i, kept[2*i], kept[2*i+1], ev.ID, ev.Message)
		}
	}
}
