package azureblob

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/config"
)

// More integration tests on Azurite, NATS and Badger: VNet flow logs,
// oversize lines, catching up from an old start_time.

const vnetRoot = "flowLogResourceID=/SUBSCRIPTIONS/8D2E4F6A-1B3C-4E5D-9F7A-2C4E6A8B0D1F/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/VNET-WEB-FL/"

func vnetRecord(at time.Time, mac string, tuples ...string) string {
	q := make([]string, len(tuples))
	for i, t := range tuples {
		q[i] = `"` + t + `"`
	}
	return fmt.Sprintf(`{"time":"%s","flowLogVersion":4,"flowLogGUID":"2c3d4e5f-6071-4829-a3b4-c5d6e7f80912","macAddress":"%s","category":"FlowLogFlowEvent","flowLogResourceID":"/%s","targetResourceID":"/subscriptions/8d2e4f6a-1b3c-4e5d-9f7a-2c4e6a8b0d1f/resourceGroups/rg-web/providers/Microsoft.Network/virtualNetworks/vnet-web","operationName":"FlowLogFlowEvent","flowRecords":{"flows":[{"aclID":"aa11bb22-cc33-4d44-8e55-ff6600778899","flowGroups":[{"rule":"DefaultRule_DenyAllInBound","flowTuples":[%s]}]}]}}`,
		at.Format(time.RFC3339Nano), mac, strings.TrimSuffix(strings.TrimPrefix(vnetRoot, "flowLogResourceID=/"), "/"), strings.Join(q, ","))
}

// TestVNetFlowLogBlocks grows two VNet flow-log block blobs (two NICs, the
// current and the previous hour) block by block, as Network Watcher
// re-commits them, with a restart in the middle, and checks that every
// tuple reaches EVENTS once. The container is watched whole, so discovery
// walks from its root down through `flowLogResourceID=/`.
func TestVNetFlowLogBlocks(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-flowlogflowevent"
	r.createContainer(cont)
	now := time.Now().UTC().Truncate(time.Second)
	a := r.newFlowBlob(cont, hourPath(vnetRoot, now)+"macAddress=000D3A4E5F60/PT1H.json")
	b := r.newFlowBlob(cont, hourPath(vnetRoot, now.Add(-time.Hour))+"macAddress=000D3A4E5F61/PT1H.json")
	cfg := r.config(Container{Name: cont})
	stop := r.start(cfg)

	// Tuple n: a denied inbound TCP flow from 203.0.113.n, time in ms.
	tuple := func(n int) string {
		return fmt.Sprintf("%d,203.0.113.%d,10.50.0.4,%d,3389,6,I,D,NX,0,0,0,0", now.UnixMilli()+int64(n), n, 40000+n)
	}
	a.add(vnetRecord(now, "000D3A4E5F60", tuple(1), tuple(2)))
	b.add(vnetRecord(now, "000D3A4E5F61", tuple(3)))
	r.waitCount(bus.StreamEvents, 3)
	a.add(vnetRecord(now, "000D3A4E5F60", tuple(4)))
	b.add(vnetRecord(now, "000D3A4E5F61", tuple(5), tuple(6)))
	r.waitCount(bus.StreamEvents, 6)
	stop()
	a.add(vnetRecord(now, "000D3A4E5F60", tuple(7)))
	b.add(vnetRecord(now, "000D3A4E5F61", tuple(8)))
	stop = r.start(cfg)
	r.waitCount(bus.StreamEvents, 8)
	a.add(vnetRecord(now, "000D3A4E5F60", tuple(9), tuple(10)))
	r.waitCount(bus.StreamEvents, 10)
	stop()

	seen := make(map[int]int)
	for _, ev := range r.events() {
		var n int
		fmt.Sscanf(ev.SrcIP, "203.0.113.%d", &n)
		seen[n]++
		if ev.Source != SourceVNetFlow || ev.Protocol != "tcp" || ev.DstPort != 3389 || ev.Host != "vnet-web" ||
			ev.Attrs["flow_state"] != "denied" || ev.Attrs["rule"] != "DefaultRule_DenyAllInBound" ||
			!ev.Time.Equal(time.UnixMilli(now.UnixMilli()+int64(n))) {
			t.Errorf("badly mapped: %+v", ev)
		}
	}
	for n := 1; n <= 10; n++ {
		if seen[n] != 1 {
			t.Errorf("tuple %d arrived %d times, want once", n, seen[n])
		}
	}
	if n := r.streamCount(bus.StreamDeadLetter); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// TestOversizeLines puts lines longer than max_record_size between good
// lines of an append blob: one inside a read chunk, and one longer than a
// whole chunk (4 MiB) that is still being written when the source stops.
// The good lines arrive once; each long one is counted, dead-lettered once
// with a sample of max_record_size bytes, and skipped, across the restart.
func TestOversizeLines(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-signinlogs"
	r.createContainer(cont)
	now := time.Now().UTC()
	name := hourPath("tenantId="+tenant+"/", now) + "PT1H.json"
	line := func(n int) string { return signInLine(n, now, fmt.Sprintf("203.0.113.%d", n), "0") }
	big := func(c byte, n int) string { return `{"pad":"` + strings.Repeat(string(c), n) + `"}` + "\n" }
	const maxRec = 4 << 10
	cfg := r.config(Container{Name: cont})
	cfg.MaxRecordSize = config.ByteSize(maxRec)
	oversize := func() float64 {
		return r.metric("outpost_component_errors_total", "component", SourceName, "error_type", "oversize")
	}

	r.appendBlob(cont, name, line(1)+big('a', 10<<10)+line(2))
	stop := r.start(cfg)
	r.waitCount(bus.StreamEvents, 2)
	r.waitCount(bus.StreamDeadLetter, 1)
	if n := oversize(); n != 1 {
		t.Errorf("oversize errors = %v, want 1", n)
	}

	// A 5 MiB line, appended in pieces and not finished yet: nothing to
	// deliver, nothing to dead-letter until its LF arrives.
	huge := big('b', 5<<20)
	for i := 0; i < len(huge)-2; i += 1 << 20 {
		r.appendBlob(cont, name, huge[i:min(i+1<<20, len(huge)-2)])
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	if ev, dl := r.streamCount(bus.StreamEvents), r.streamCount(bus.StreamDeadLetter); ev != 2 || dl != 1 {
		t.Fatalf("during an unfinished long line: %d events, %d dead letters; want 2, 1", ev, dl)
	}
	r.appendBlob(cont, name, huge[len(huge)-2:]+line(3))
	stop = r.start(cfg)
	r.waitCount(bus.StreamEvents, 3)
	r.waitCount(bus.StreamDeadLetter, 2)
	if n := oversize(); n != 1 {
		t.Errorf("oversize errors after the restart = %v, want 1", n)
	}
	r.appendBlob(cont, name, line(4)+big('c', maxRec)+line(5))
	r.waitCount(bus.StreamEvents, 5)
	r.waitCount(bus.StreamDeadLetter, 3)
	stop()
	// Once more: everything is checkpointed, nothing comes again.
	stop = r.start(cfg)
	time.Sleep(500 * time.Millisecond)
	stop()
	if ev, dl := r.streamCount(bus.StreamEvents), r.streamCount(bus.StreamDeadLetter); ev != 5 || dl != 3 {
		t.Errorf("after a restart with nothing new: %d events, %d dead letters; want 5, 3", ev, dl)
	}

	seen := make(map[string]int)
	for _, ev := range r.events() {
		seen[ev.Attrs["signin_id"]]++
	}
	for n := 1; n <= 5; n++ {
		if id := fmt.Sprintf("signin-%03d", n); seen[id] != 1 {
			t.Errorf("%s arrived %d times, want once", id, seen[id])
		}
	}
	dls := r.deadLetters()
	for i, c := range []byte("abc") {
		if i >= len(dls) {
			break
		}
		m := dls[i]
		want := []byte(`{"pad":"` + strings.Repeat(string(c), maxRec-8))
		if !bytes.Equal(m.Data, want) {
			t.Errorf("dead letter %d: %d bytes starting %.20q, want the line's first %d bytes", i, len(m.Data), m.Data, maxRec)
		}
		if reason := m.Header.Get("Outpost-Reason"); !strings.HasPrefix(reason, "oversize: line at offset ") || !strings.Contains(reason, "over max_record_size") {
			t.Errorf("dead letter %d: reason %q", i, reason)
		}
		if sender := m.Header.Get("Outpost-Sender"); sender != "test/"+cont+"/"+name {
			t.Errorf("dead letter %d: sender %q", i, sender)
		}
		if m.Subject != "deadletter."+SourceName {
			t.Errorf("dead letter %d: subject %q", i, m.Subject)
		}
	}
}

// TestCatchUpFromStartTime starts a source for the first time with a
// start_time two weeks back. Blobs in hours between start_time and the
// lookback are all read (in three polls of at most a week of hours each);
// a blob of an hour before start_time is not. The last catch-up poll ends
// inside the open window; a blob of the open window that grows afterwards
// is still read. (Before the fix, the resume hour moved to the end of the
// last catch-up poll, past open hours: that growth was lost.)
//
// The source's clock is pinned to the middle of an hour, so the hour
// arithmetic does not depend on when the test runs.
func TestCatchUpFromStartTime(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-signinlogs"
	r.createContainer(cont)
	base := time.Now().UTC().Truncate(time.Hour).Add(30 * time.Minute)
	t0 := time.Now()
	r.tune = func(s *Source) { s.now = func() time.Time { return base.Add(time.Since(t0)) } }
	hour := base.Truncate(time.Hour)
	root := "tenantId=" + tenant + "/"
	blobAt := func(h int) string { return hourPath(root, hour.Add(time.Duration(-h)*time.Hour)) + "PT1H.json" }
	line := func(n int) string { return signInLine(n, base, fmt.Sprintf("203.0.113.%d", n), "0") }

	// Hours back from the current one: 340 is before start_time; 337 is
	// start_time's hour; 169 is where the second poll begins, listed by
	// the first and the second; 2 is in the open window (lookback 3h).
	hoursBack := []int{340, 337, 250, 169, 100, 10, 2, 0}
	for i, h := range hoursBack {
		r.appendBlob(cont, blobAt(h), line(i))
	}
	cfg := r.config(Container{Name: cont, Prefixes: []string{root}})
	cfg.Accounts[0].StartTime = hour.Add(-337*time.Hour + 20*time.Minute)
	stop := r.start(cfg)
	r.waitCount(bus.StreamEvents, uint64(len(hoursBack)-1))
	// Caught up; the open hour 2 grows.
	r.appendBlob(cont, blobAt(2), line(100))
	r.waitCount(bus.StreamEvents, uint64(len(hoursBack)))
	stop()

	seen := make(map[string]int)
	for _, ev := range r.events() {
		seen[ev.Attrs["signin_id"]]++
	}
	for i, h := range hoursBack {
		want := 1
		if h == 340 {
			want = 0
		}
		if id := fmt.Sprintf("signin-%03d", i); seen[id] != want {
			t.Errorf("the blob %dh back (%s) arrived %d times, want %d", h, id, seen[id], want)
		}
	}
	if seen["signin-100"] != 1 {
		t.Errorf("the line appended to an open hour after the catch-up arrived %d times, want once", seen["signin-100"])
	}
	from, found, err := (&Source{db: r.db}).loadResume(resumeKey("test", cont))
	if err != nil || !found || !from.Equal(hour.Add(-3*time.Hour)) {
		t.Errorf("resume hour = %v %v %v, want %v (now − lookback)", from, found, err, hour.Add(-3*time.Hour))
	}
}

// A record that is not JSON at all is a json error; valid JSON of the
// wrong shape is a schema error.
func TestNotJSONIsLabelledJSON(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-signinlogs"
	r.createContainer(cont)
	now := time.Now().UTC()
	r.appendBlob(cont, hourPath("tenantId="+tenant+"/", now)+"PT1H.json", "this is not json\n[1,2]\n"+signInLine(1, now, "203.0.113.1", "0"))
	r.start(r.config(Container{Name: cont}))
	r.waitCount(bus.StreamEvents, 1)
	r.waitCount(bus.StreamDeadLetter, 2)
	for kind, want := range map[string]float64{"json": 1, "schema": 1} {
		if n := r.metric("outpost_component_errors_total", "component", SourceName, "error_type", kind); n != want {
			t.Errorf("error_type %s = %v, want %v", kind, n, want)
		}
	}
	var reasons []string
	for _, m := range r.deadLetters() {
		reasons = append(reasons, m.Header.Get("Outpost-Reason"))
	}
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], "json: ") || !strings.HasPrefix(reasons[1], "schema: ") {
		t.Errorf("dead-letter reasons %q, want json: ..., schema: ...", reasons)
	}
}
