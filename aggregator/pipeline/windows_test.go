package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// Windows events sent over TCP as NXLog sends them (RFC 5424 structured
// data, and JSON) raise the pack's Windows rules and a Sigma
// process_creation rule on both shapes; the SIEM gets them as CEF.
func TestWindowsEventsEndToEnd(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	sigmaDir := t.TempDir()
	writeRules(t, sigmaDir, "whoami.yml", `title: whoami run by an Office application
id: 5c2d7e10-0000-4000-8000-000000000001
status: stable
level: high
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\whoami.exe'
    ParentImage|endswith: ['\winword.exe', '\excel.exe']
  condition: selection
`)
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Rules.Sigma = []string{sigmaDir}
	p := start(t, cfg)
	at := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339) }
	frames := []string{
		// 4688 as structured data: Word starts whoami (the Sigma rule; not a LOLBin of the pack).
		fmt.Sprintf(`<86>1 %s ws-17 Microsoft-Windows-Security-Auditing 4 - [NXLOG@14506 EventID="4688" Channel="Security" SubjectUserName="alice" NewProcessName="C:\\Windows\\System32\\whoami.exe" CommandLine="whoami /all" ParentProcessName="C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"] A new process has been created.`, at(0)),
		// Sysmon 1 as NXLog JSON: Excel starts whoami (the Sigma rule again) ...
		fmt.Sprintf(`<14>1 %s ws-18 nxlog - - - {"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Image":"C:\\Windows\\System32\\whoami.exe","CommandLine":"whoami","ParentImage":"C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE","User":"CONTOSO\\bob"}`, at(1)),
		// ... and PowerShell with an encoded command (two pack rules: encoded, and from Office).
		fmt.Sprintf(`<14>1 %s ws-18 nxlog - - - {"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Image":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe","CommandLine":"powershell -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA","ParentImage":"C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE","User":"CONTOSO\\bob"}`, at(2)),
		// The audit log cleared.
		fmt.Sprintf(`<86>1 %s dc-01 Microsoft-Windows-Eventlog 1 - [NXLOG@14506 EventID="1102" Channel="Security" SubjectUserName="eve"] The audit log was cleared.`, at(3)),
	}
	for i := range frames {
		frames[i] = octet(frames[i])
	}
	send(t, "tcp", p.tcp, frames...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := siem.Wait(ctx, 5); err != nil {
		t.Fatalf("want 5 alerts: %v (got %q)", err, siem.Messages())
	}
	p.waitSettled(t, 4)
	time.Sleep(300 * time.Millisecond)
	msgs := siem.Messages()
	all := strings.Join(msgs, "\n")
	count := func(s string) int { return strings.Count(all, s) }
	for want, n := range map[string]int{
		"|5c2d7e10-0000-4000-8000-000000000001|whoami run by an Office application|8|": 2,
		"|windows-encoded-powershell|": 1,
		"|office-spawns-lolbin|":       1,
		"|windows-audit-log-cleared|":  1,
	} {
		if got := count(want); got != n {
			t.Errorf("%d alerts with %q, want %d", got, want, n)
		}
	}
	if len(msgs) != 5 {
		t.Errorf("%d alerts, want 5:\n%s", len(msgs), all)
	}
}
