package azureblob

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob/azuritetest"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// These tests run the source against the real Azurite emulator, the real
// embedded NATS server with JetStream and Badger, all in temp dirs.

const (
	tenant  = "3f6c1e2a-9b47-4d21-a8e5-7c0d2b9f4e13"
	nsgRoot = "resourceId=/SUBSCRIPTIONS/8D2E4F6A-1B3C-4E5D-9F7A-2C4E6A8B0D1F/RESOURCEGROUPS/RG-WEB/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-WEB/"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// rig is Azurite, a bus and a state database for one test.
type rig struct {
	t    *testing.T
	conn string
	az   *azblob.Client
	bus  *bus.Bus
	db   *state.DB

	// logger, when set, is the logger of the sources started next
	// (default testLogger); tune, when set, adjusts each before it runs
	// (its clock, its retry policy).
	logger *slog.Logger
	tune   func(*Source)
	// reg is the metric registry of the last source started.
	reg *prometheus.Registry
}

func newRig(t *testing.T) *rig {
	t.Helper()
	conn := azuritetest.Start(t)
	az, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	var bc bus.Config
	if err := bc.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(context.Background(), bc, t.TempDir(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return &rig{t: t, conn: conn, az: az, bus: b, db: openTestDB(t)}
}

// openTestDB opens a Badger state database in a temp dir for the test.
func openTestDB(t *testing.T) *state.DB {
	t.Helper()
	var sc state.Config
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := state.Open(t.TempDir(), sc, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func (r *rig) config(containers ...Container) Config {
	return Config{
		PollInterval:      100 * time.Millisecond,
		DiscoveryInterval: 300 * time.Millisecond,
		Accounts: []Account{{
			Name: "test", Auth: AuthConnectionString,
			ConnectionString: Secret{Value: r.conn},
			Containers:       containers,
		}},
	}
}

// start runs a source until the returned stop is called.
func (r *rig) start(cfg Config) (stop func()) {
	r.t.Helper()
	logger := r.logger
	if logger == nil {
		logger = testLogger()
	}
	r.reg = prometheus.NewRegistry()
	s, err := New(cfg, r.bus, r.db, logger, r.reg)
	if err != nil {
		r.t.Fatal(err)
	}
	if r.tune != nil {
		r.tune(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					r.t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				r.t.Fatal("source did not stop within 30s")
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) createContainer(name string) {
	if _, err := r.az.CreateContainer(context.Background(), name, nil); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) appendBlob(container, name string, data string) {
	r.t.Helper()
	ab := r.az.ServiceClient().NewContainerClient(container).NewAppendBlobClient(name)
	ctx := context.Background()
	if _, err := ab.GetProperties(ctx, nil); err != nil {
		if _, err := ab.Create(ctx, nil); err != nil {
			r.t.Fatal(err)
		}
	}
	if data == "" {
		return
	}
	if _, err := ab.AppendBlock(ctx, streaming.NopCloser(strings.NewReader(data)), nil); err != nil {
		r.t.Fatal(err)
	}
}

// flowBlob writes a flow-log blob the way Network Watcher does: stage the
// new block, then commit head, every record block so far, new block, tail.
type flowBlob struct {
	r       *rig
	bb      *blockblob.Client
	records []string
}

func blockID(kind byte, n int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%c%032d", kind, n))
}

func (r *rig) newFlowBlob(container, name string) *flowBlob {
	f := &flowBlob{r: r, bb: r.az.ServiceClient().NewContainerClient(container).NewBlockBlobClient(name)}
	ctx := context.Background()
	for _, b := range []struct{ id, data string }{{blockID('A', 0), `{"records":[`}, {blockID('Z', 0), `]}`}} {
		if _, err := f.bb.StageBlock(ctx, b.id, streaming.NopCloser(strings.NewReader(b.data)), nil); err != nil {
			r.t.Fatal(err)
		}
	}
	f.commit()
	return f
}

func (f *flowBlob) add(record string) {
	f.r.t.Helper()
	if err := f.tryAdd(record); err != nil {
		f.r.t.Fatal(err)
	}
}

// tryAdd is add for goroutines other than the test's (a proxy hook).
func (f *flowBlob) tryAdd(record string) error {
	data := record
	if len(f.records) > 0 {
		data = "," + record // every record block after the first starts with a comma
	}
	id := blockID('B', len(f.records)+1)
	if _, err := f.bb.StageBlock(context.Background(), id, streaming.NopCloser(strings.NewReader(data)), nil); err != nil {
		return err
	}
	f.records = append(f.records, id)
	return f.tryCommit()
}

func (f *flowBlob) commit() {
	if err := f.tryCommit(); err != nil {
		f.r.t.Fatal(err)
	}
}

func (f *flowBlob) tryCommit() error {
	ids := append(append([]string{blockID('A', 0)}, f.records...), blockID('Z', 0))
	_, err := f.bb.CommitBlockList(context.Background(), ids, nil)
	return err
}

// streamCount is how many events EVENTS holds (its messages are batches
// of events), or how many messages another stream holds.
func (r *rig) streamCount(name string) uint64 {
	if name == bus.StreamEvents {
		return uint64(len(r.events()))
	}
	s, err := r.bus.JetStream().Stream(context.Background(), name)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return info.State.Msgs
}

// waitCount waits until EVENTS holds n messages, then checks that it
// still holds n a few polls later (nothing arrives twice).
func (r *rig) waitCount(stream string, n uint64) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.streamCount(stream) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s holds %d messages after 30s, want %d", stream, r.streamCount(stream), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(600 * time.Millisecond)
	if got := r.streamCount(stream); got != n {
		r.t.Fatalf("%s holds %d messages, want exactly %d", stream, got, n)
	}
}

// events reads every message of EVENTS without consuming it for good.
func (r *rig) events() []event.Event {
	r.t.Helper()
	ctx := context.Background()
	// EVENTS is a work queue: a pull consumer with explicit acks, which
	// this one never sends, so the test reads without removing.
	c, err := r.bus.JetStream().CreateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: 5 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	// A work queue allows one unfiltered consumer at a time.
	defer r.bus.JetStream().DeleteConsumer(ctx, bus.StreamEvents, c.CachedInfo().Name)
	var out []event.Event
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			r.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			err := bus.DecodeEvents(m.Data(), func(ev *event.Event) error {
				if !strings.HasPrefix(m.Subject(), "events.azure.") || m.Subject() != "events."+ev.Source {
					r.t.Errorf("subject %s for source %s", m.Subject(), ev.Source)
				}
				cp := *ev // DecodeEvents reuses ev, and its map
				cp.Attrs = maps.Clone(ev.Attrs)
				out = append(out, cp)
				return nil
			}, func(line []byte, err error) error { return err })
			if err != nil {
				r.t.Fatal(err)
			}
		}
		if n == 0 {
			return out
		}
	}
}

func signInLine(n int, at time.Time, ip string, code string) string {
	return fmt.Sprintf(`{"time":"%s","resourceId":"/tenants/%s/providers/Microsoft.aadiam","operationName":"Sign-in activity","category":"SignInLogs","tenantId":"%s","resultType":"%s","callerIpAddress":"%s","Level":4,"properties":{"id":"signin-%03d","createdDateTime":"%s","userPrincipalName":"user%d@fabrikam.example","appDisplayName":"Azure Portal","ipAddress":"%s","status":{"errorCode":%s}}}`+"\n",
		at.Format(time.RFC3339Nano), tenant, tenant, code, ip, n, at.Format(time.RFC3339Nano), n%3, ip, code)
}

func nsgRecord(at time.Time, tuples ...string) string {
	q := make([]string, len(tuples))
	for i, t := range tuples {
		q[i] = `"` + t + `"`
	}
	return fmt.Sprintf(`{"time":"%s","systemId":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","macAddress":"000D3A1B2C3D","category":"NetworkSecurityGroupFlowEvent","resourceId":"/%s","operationName":"NetworkSecurityGroupFlowEvents","properties":{"Version":2,"flows":[{"rule":"DefaultRule_DenyAllInBound","flows":[{"mac":"000D3A1B2C3D","flowTuples":[%s]}]}]}}`,
		at.Format(time.RFC3339Nano), strings.TrimPrefix(strings.TrimSuffix(nsgRoot, "/"), "resourceId=/"), strings.Join(q, ","))
}

func hourPath(root string, h time.Time) string { return root + hourPrefix(h) + "m=00/" }

// TestAppendBlobsIncremental grows sign-in append blobs line by line (with
// partial lines, a bad line and the previous hour still growing) while the
// source polls, restarts the source in the middle, and checks that EVENTS
// holds every record exactly once.
func TestAppendBlobsIncremental(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-signinlogs"
	r.createContainer(cont)
	now := time.Now().UTC()
	cur := hourPath("tenantId="+tenant+"/", now) + "PT1H.json"
	prev := hourPath("tenantId="+tenant+"/", now.Add(-time.Hour)) + "PT1H.json"
	old := hourPath("tenantId="+tenant+"/", now.Add(-10*time.Hour)) + "PT1H.json" // closed: before the lookback
	r.appendBlob(cont, old, signInLine(900, now.Add(-10*time.Hour), "192.0.2.9", "0"))

	cfg := r.config(Container{Name: cont, Prefixes: []string{"tenantId=" + tenant + "/"}})
	stop := r.start(cfg)

	line := func(n int) string {
		return signInLine(n, now.Add(time.Duration(n)*time.Second), fmt.Sprintf("203.0.113.%d", n), []string{"0", "50126"}[n%2])
	}
	// Two lines and half of the third: the half waits.
	l3 := line(3)
	r.appendBlob(cont, prev, line(1))
	r.appendBlob(cont, cur, line(2)+l3[:40])
	r.waitCount(bus.StreamEvents, 2)
	// The rest of line 3, a bad line, line 4; the previous hour grows too.
	r.appendBlob(cont, cur, l3[40:])
	r.appendBlob(cont, cur, `{"time":"2026-03-02T09:14:05Z","properties":{"userPrincipalName":"trunc`+"\n")
	r.appendBlob(cont, cur, line(4))
	r.appendBlob(cont, prev, line(5))
	r.waitCount(bus.StreamEvents, 5)
	r.waitCount(bus.StreamDeadLetter, 1)

	// Restart: lines written while the source is down, a partial line
	// across the restart.
	stop()
	l8 := line(8)
	r.appendBlob(cont, cur, line(6)+line(7)+l8[:10])
	stop = r.start(cfg)
	r.waitCount(bus.StreamEvents, 7)
	r.appendBlob(cont, cur, l8[10:]+line(9))
	r.appendBlob(cont, prev, line(10))
	r.waitCount(bus.StreamEvents, 10)
	stop()

	seen := make(map[string]int)
	ids := make(map[string]bool)
	for _, ev := range r.events() {
		seen[ev.Attrs["signin_id"]]++
		if ids[ev.ID] {
			t.Errorf("event id %s twice", ev.ID)
		}
		ids[ev.ID] = true
		if ev.Source != SourceSignIn || ev.Action != "logon" || ev.SrcIP == "" || ev.User == "" {
			t.Errorf("badly mapped: %+v", ev)
		}
	}
	for n := 1; n <= 10; n++ {
		if id := fmt.Sprintf("signin-%03d", n); seen[id] != 1 {
			t.Errorf("%s arrived %d times, want once", id, seen[id])
		}
	}
	if seen["signin-900"] != 0 {
		t.Errorf("a blob of a closed hour was read")
	}
	if r.streamCount(bus.StreamDeadLetter) != 1 {
		t.Errorf("dead letters: %d, want 1", r.streamCount(bus.StreamDeadLetter))
	}
}

// TestFlowLogBlocks grows an NSG flow-log block blob block by block, as
// Network Watcher re-commits it, with a restart in the middle, and checks
// that every tuple reaches EVENTS once.
func TestFlowLogBlocks(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-networksecuritygroupflowevent"
	r.createContainer(cont)
	now := time.Now().UTC().Truncate(time.Second)
	name := hourPath(nsgRoot, now) + "macAddress=000D3A1B2C3D/PT1H.json"
	fb := r.newFlowBlob(cont, name)
	cfg := r.config(Container{Name: cont, Prefixes: []string{"resourceId=/SUBSCRIPTIONS/8D2E4F6A-1B3C-4E5D-9F7A-2C4E6A8B0D1F/"}})
	stop := r.start(cfg)

	tuple := func(n int) string {
		return fmt.Sprintf("%d,203.0.113.%d,10.50.0.4,%d,22,T,I,D,B,,,,", now.Unix()+int64(n), n, 40000+n)
	}
	fb.add(nsgRecord(now, tuple(1), tuple(2)))
	r.waitCount(bus.StreamEvents, 2)
	fb.add(nsgRecord(now, tuple(3)))
	fb.add(`{"category":"NetworkSecurityGroupFlowEvent","properties":{"Version":2,"flows":[{"rule":"r","flows":[{"mac":"m","flowTuples":["bad"]}]}]}}`)
	fb.add(nsgRecord(now, tuple(4), tuple(5)))
	r.waitCount(bus.StreamEvents, 5)
	r.waitCount(bus.StreamDeadLetter, 1)
	stop()
	fb.add(nsgRecord(now, tuple(6)))
	stop = r.start(cfg)
	fb.add(nsgRecord(now, tuple(7), tuple(8)))
	r.waitCount(bus.StreamEvents, 8)
	stop()

	seen := make(map[int]int)
	for _, ev := range r.events() {
		var n int
		fmt.Sscanf(ev.SrcIP, "203.0.113.%d", &n)
		seen[n]++
		if ev.Source != SourceNSGFlow || ev.DstPort != 22 || ev.Outcome != "failure" || ev.Attrs["rule"] != "DefaultRule_DenyAllInBound" {
			t.Errorf("badly mapped: %+v", ev)
		}
	}
	for n := 1; n <= 8; n++ {
		if seen[n] != 1 {
			t.Errorf("tuple %d arrived %d times, want once", n, seen[n])
		}
	}
}

// TestWholeDocumentBlockBlob: a block blob without the flow-log layout (a
// pre-2018 records document written at once) is read whole, and again
// only when it changes. (Overwriting a blob gives it a new creation
// time, so that is a new blob read from its start.)
func TestWholeDocumentBlockBlob(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-auditevent"
	r.createContainer(cont)
	name := hourPath("resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV/", time.Now().UTC()) + "PT1H.json"
	rec := func(n int) string {
		return fmt.Sprintf(`{"time":"%s","resourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV","operationName":"SecretGet","category":"AuditEvent","resultType":"Success","callerIpAddress":"192.0.2.%d"}`, time.Now().UTC().Format(time.RFC3339), n)
	}
	put := func(name string, recs ...string) {
		doc := `{"records":[` + strings.Join(recs, ",") + `]}`
		if _, err := r.az.UploadBuffer(context.Background(), cont, name, []byte(doc), nil); err != nil {
			t.Fatal(err)
		}
	}
	put(name, rec(1), rec(2))
	r.start(r.config(Container{Name: cont}))
	r.waitCount(bus.StreamEvents, 2)
	put(strings.Replace(name, "/VAULTS/KV/", "/VAULTS/KV2/", 1), rec(3))
	r.waitCount(bus.StreamEvents, 3)
}

// endpoint is Azurite's blob service URL for the dev account,
// http://127.0.0.1:<port>/devstoreaccount1.
func (r *rig) endpoint() string {
	r.t.Helper()
	for _, kv := range strings.Split(r.conn, ";") {
		if v, ok := strings.CutPrefix(kv, "BlobEndpoint="); ok {
			return v
		}
	}
	r.t.Fatalf("no BlobEndpoint in %q", r.conn)
	return ""
}

// metric is one series of the last started source's metrics, by name and
// label pairs (name, value, …); 0 when it is not there.
func (r *rig) metric(name string, labels ...string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// waitFor polls cond until it holds, failing the test after 20s.
func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after 20s waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deadLetters returns the messages of DEADLETTER, oldest first.
func (r *rig) deadLetters() []*jetstream.RawStreamMsg {
	r.t.Helper()
	ctx := context.Background()
	s, err := r.bus.JetStream().Stream(ctx, bus.StreamDeadLetter)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}
