// Package azuritetest starts the Azurite blob emulator for tests: on
// 127.0.0.1, on a free port the emulator picks, with its data in a temp
// dir, stopped when the test ends.
//
// Azurite comes from npm (`azurite@3.35.0`, the last release that runs on
// Node 20). Tests find it through $OUTPOST_AZURITE (the azurite-blob
// executable, or the npm prefix it was installed into) or in
// $HOME/.cache/outpost/azurite, where .ci/run installs it. When it is
// missing a test is skipped, except under CI=true, where it fails: CI must
// not pass by skipping the integration tests.
package azuritetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// Azurite's well-known development account (public, documented by
// Microsoft; it works only against the emulator).
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Install says how to get Azurite where the tests look.
const Install = "npm install --prefix ~/.cache/outpost/azurite azurite@3.35.0 (or set OUTPOST_AZURITE to azurite-blob)"

// Find returns the azurite-blob executable, or "" when there is none.
func Find() string {
	var candidates []string
	if p := os.Getenv("OUTPOST_AZURITE"); p != "" {
		candidates = append(candidates, p, filepath.Join(p, "node_modules", ".bin", "azurite-blob"), filepath.Join(p, "azurite-blob"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".cache", "outpost", "azurite", "node_modules", ".bin", "azurite-blob"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	return ""
}

var listening = regexp.MustCompile(`listens on (http://127\.0\.0\.1:\d+)`)

// Start runs azurite-blob for the test and returns its connection string.
func Start(t testing.TB) string {
	t.Helper()
	bin := Find()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Azurite is required under CI=true but was not found; install it: %s", Install)
		}
		t.Skipf("Azurite not installed; to run this test: %s", Install)
	}
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1", "--blobPort", "0",
		"--location", t.TempDir(),
		"--skipApiVersionCheck", "--disableTelemetry", "--loose")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // the exit status of a killed emulator says nothing
	t.Cleanup(func() {
		// The process group: azurite-blob is a node script and may fork.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case url := <-found:
		return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s/%s;", Account, Key, url, Account)
	case <-exited:
		t.Fatalf("azurite-blob exited before listening")
	case <-time.After(60 * time.Second):
		t.Fatalf("azurite-blob did not listen within 60s")
	}
	return ""
}
