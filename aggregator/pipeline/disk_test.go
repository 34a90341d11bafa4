package pipeline

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-siem/outpost/aggregator/config"
)

func readyz(t *testing.T, p *running) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDiskFloorHoldsIngest runs the appliance with disk.min_free above the
// free space of its data dir (the disk is "full" as far as the floor
// goes): events are received but held back, /readyz fails and says why,
// the gauges show it; once the floor is below the free space again (space
// freed) the held events go through without a restart.
func TestDiskFloorHoldsIngest(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := st.Bavail * uint64(st.Bsize)
	cfg := testConfig(t, dir, "127.0.0.1:9")
	cfg.HTTP.Listen = "127.0.0.1:0"
	// Below the floor, above half of it: ingest held, consumers running.
	cfg.Disk.MinFree = config.ByteSize(free + free/2)
	cfg.Disk.CheckInterval = 20 * time.Millisecond
	r := start(t, cfg)

	const n = 20
	var frames []string
	for i := range n {
		frames = append(frames, sshFail(t0.Add(time.Duration(i)*time.Second), "203.0.113.7", 40000+i)+"\n")
	}
	send(t, "tcp", r.tcp, frames...)
	waitFor(t, "the events received", func() bool {
		return r.counter("outpost_component_received_events_total") == n
	})
	time.Sleep(300 * time.Millisecond)
	if got := r.counter("outpost_bus_published_events_total"); got != 0 {
		t.Errorf("%v events published below the disk floor, want 0", got)
	}
	if code, body := readyz(t, r); code != http.StatusServiceUnavailable || !strings.Contains(body, "disk.min_free") {
		t.Errorf("/readyz below the floor: %d %q, want 503 naming disk.min_free", code, body)
	}
	if got := r.counter("outpost_disk_low"); got != 1 {
		t.Errorf("outpost_disk_low = %v, want 1", got)
	}
	if got := r.counter("outpost_disk_free_bytes"); got <= 0 {
		t.Errorf("outpost_disk_free_bytes = %v", got)
	}
	if pr := r.Status().Problems; len(pr) != 1 || !strings.Contains(pr[0], "disk") {
		t.Errorf("status problems = %q, want the disk", pr)
	}

	// Space is back.
	if err := r.disk.SetMinFree(512 << 20); err != nil {
		t.Fatal(err)
	}
	r.waitSettled(t, n)
	if code, body := readyz(t, r); code != http.StatusOK {
		t.Errorf("/readyz after space came back: %d %q", code, body)
	}
	if got := r.counter("outpost_disk_low"); got != 0 {
		t.Errorf("outpost_disk_low = %v after space came back, want 0", got)
	}
}
