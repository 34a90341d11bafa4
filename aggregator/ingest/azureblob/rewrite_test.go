package azureblob

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// replace stages record under a new block id and commits it in place of
// the k-th record block, the delivered blocks around it unchanged.
func (f *flowBlob) replace(k int, record string) {
	f.r.t.Helper()
	data := record
	if k > 0 {
		data = "," + record
	}
	id := blockID('C', k)
	if _, err := f.bb.StageBlock(context.Background(), id, streaming.NopCloser(strings.NewReader(data)), nil); err != nil {
		f.r.t.Fatal(err)
	}
	f.records[k] = id
	f.commit()
}

// TestFlowLogMiddleBlockReplaced: a flow-log blob's middle record block is
// replaced after it was delivered, while the last delivered block stays.
// Network Watcher never does this, so the reader treats it as a rewritten
// blob: it counts a layout error, logs, and reads the blob again from its
// first record block, so the new record arrives (the unchanged blocks
// come again with their old event ids, which downstream drops).
func TestFlowLogMiddleBlockReplaced(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-networksecuritygroupflowevent"
	r.createContainer(cont)
	now := time.Now().UTC().Truncate(time.Second)
	fb := r.newFlowBlob(cont, hourPath(nsgRoot, now)+"macAddress=000D3A1B2C3D/PT1H.json")
	stop := r.start(r.config(Container{Name: cont}))
	defer stop()

	tuple := func(n int) string {
		return fmt.Sprintf("%d,203.0.113.%d,10.50.0.4,%d,22,T,I,D,B,,,,", now.Unix()+int64(n), n, 40000+n)
	}
	fb.add(nsgRecord(now, tuple(1)))
	fb.add(nsgRecord(now, tuple(2)))
	fb.add(nsgRecord(now, tuple(3)))
	r.waitCount(bus.StreamEvents, 3)
	ids := map[int]string{}
	for _, ev := range r.events() {
		var n int
		fmt.Sscanf(ev.SrcIP, "203.0.113.%d", &n)
		ids[n] = ev.ID
	}

	fb.replace(1, nsgRecord(now, tuple(9))) // the middle block: tuple 2 becomes tuple 9
	r.waitFor("the replaced block's tuple", func() bool {
		for _, ev := range r.events() {
			if ev.SrcIP == "203.0.113.9" {
				return true
			}
		}
		return false
	})
	if n := r.metric("outpost_component_errors_total", "component", SourceName, "error_type", "layout"); n != 1 {
		t.Errorf("layout errors = %v, want 1", n)
	}
	seen := map[int]int{}
	for _, ev := range r.events() {
		var n int
		fmt.Sscanf(ev.SrcIP, "203.0.113.%d", &n)
		seen[n]++
		if id, ok := ids[n]; ok && ev.ID != id {
			t.Errorf("tuple %d came again with another id: %s, then %s", n, id, ev.ID)
		}
	}
	if seen[9] != 1 || seen[1] != 2 || seen[3] != 2 {
		t.Errorf("tuples seen %v, want 1 and 3 twice (same ids), 9 once", seen)
	}
}

// The digest of a prefix of the record blocks changes with any block's id
// or size inside it, and only with those.
func TestBlockDigests(t *testing.T) {
	mk := func(specs ...string) []*blockblob.Block {
		var out []*blockblob.Block
		for _, s := range specs {
			id, size, _ := strings.Cut(s, ":")
			n := int64(len(size))
			out = append(out, &blockblob.Block{Name: &id, Size: &n})
		}
		return out
	}
	base := blockDigests(mk("a:x", "b:xx", "c:xxx"))
	for name, other := range map[string][]string{
		"middle id":   blockDigests(mk("a:x", "B:xx", "c:xxx")),
		"middle size": blockDigests(mk("a:x", "b:xxx", "c:xxx")),
	} {
		if other[1] != base[1] || other[2] == base[2] || other[3] == base[3] {
			t.Errorf("%s: digests %v, base %v", name, other, base)
		}
	}
	if grown := blockDigests(mk("a:x", "b:xx", "c:xxx", "d:x")); grown[3] != base[3] || base[0] != "" {
		t.Errorf("a new block changed the digest of the blocks before it")
	}
}
