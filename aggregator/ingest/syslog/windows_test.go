package syslog

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Windows events in the three shapes agents send (NXLog structured data,
// NXLog JSON, Winlogbeat JSON) fill the schema, and their own fields are
// reachable as win.<Name>. The samples are written for these tests from
// the events' documented fields.
func TestWindowsEvents(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      map[string]string
	}{
		{"4688 as NXLog structured data",
			`<86>1 2026-12-04T10:00:00Z ws-17 Microsoft-Windows-Security-Auditing 4 - [NXLOG@14506 EventID="4688" Channel="Security" SubjectUserName="alice" NewProcessId="0x1a2c" NewProcessName="C:\\Windows\\System32\\cmd.exe" CommandLine="cmd.exe /c whoami" ParentProcessName="C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"] A new process has been created.`,
			map[string]string{"action": "process_created", "category": "process", "user": "alice", "event_code": "4688", "channel": "Security",
				"process": `C:\Windows\System32\cmd.exe`, "command_line": "cmd.exe /c whoami", "process_id": "6700",
				"parent_process": `C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`, "win.Image": `C:\Windows\System32\cmd.exe`,
				"win.ParentImage": `C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`, "win.CommandLine": "cmd.exe /c whoami",
				"win.Provider": "Microsoft-Windows-Security-Auditing"}},
		{"4624 RDP logon",
			`<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4624" TargetUserName="administrator" IpAddress="::ffff:203.0.113.70" IpPort="50123" LogonType="10"] An account was successfully logged on.`,
			map[string]string{"action": "logon", "outcome": "success", "user": "administrator", "src_ip": "203.0.113.70", "logon_type": "10", "win.LogonType": "10"}},
		{"4732 member added to Administrators",
			`<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4732" SubjectUserName="eve" MemberName="CN=mallory,CN=Users,DC=contoso,DC=example" TargetUserName="Administrators"] A member was added.`,
			map[string]string{"action": "group_member_added", "category": "iam", "user": "eve", "target_user": "CN=mallory,CN=Users,DC=contoso,DC=example", "group": "Administrators"}},
		{"1102 log cleared", `<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Eventlog 1 - [NXLOG@14506 EventID="1102" SubjectUserName="eve"] The audit log was cleared.`,
			map[string]string{"action": "audit_log_cleared", "user": "eve", "event_code": "1102"}},
		{"7045 service installed", `<86>1 2026-12-04T10:00:00Z srv-02 Service_Control_Manager 1 - [NXLOG@14506 EventID="7045" Channel="System" ServiceName="updsvc" ImagePath="C:\\Users\\Public\\upd.exe"] A service was installed.`,
			map[string]string{"action": "service_installed", "service": "updsvc", "file_path": `C:\Users\Public\upd.exe`, "channel": "System"}},
		{"4769 Kerberos RC4 ticket", `<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4769" TargetUserName="bob@CONTOSO.EXAMPLE" ServiceName="sql-svc" TicketEncryptionType="0x17" IpAddress="::ffff:10.0.0.9" Status="0x0"] A ticket was requested.`,
			map[string]string{"action": "kerberos_service_ticket", "outcome": "success", "user": "bob@CONTOSO.EXAMPLE", "service": "sql-svc", "src_ip": "10.0.0.9", "win.TicketEncryptionType": "0x17"}},
		{"4625 as NXLog JSON",
			`<14>1 2026-12-04T10:00:00Z ws-17 nxlog - - - {"EventTime":"2026-12-04 10:00:00","Hostname":"ws-17.contoso.example","EventID":4625,"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","TargetUserName":"bob","IpAddress":"198.51.100.4","IpPort":"0","LogonType":3}`,
			map[string]string{"action": "logon", "outcome": "failure", "user": "bob", "src_ip": "198.51.100.4", "logon_type": "3", "channel": "Security", "win.EventID": "4625"}},
		{"Sysmon 1 as NXLog JSON",
			`<14>1 2026-12-04T10:00:00Z ws-17 nxlog - - - {"EventID":1,"SourceName":"Microsoft-Windows-Sysmon","Image":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe","CommandLine":"powershell -enc SQBFAFgA","ParentImage":"C:\\Windows\\explorer.exe","User":"CONTOSO\\alice","ProcessId":"4242","Hashes":"SHA256=0011"}`,
			map[string]string{"action": "process_created", "process": `C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`, "command_line": "powershell -enc SQBFAFgA",
				"parent_process": `C:\Windows\explorer.exe`, "user": `CONTOSO\alice`, "process_id": "4242", "file_hash": "SHA256=0011", "channel": "Microsoft-Windows-Sysmon/Operational"}},
		{"Sysmon 3 from Winlogbeat",
			`<14>1 2026-12-04T10:00:00Z ws-17 winlogbeat - - - {"winlog":{"event_id":"3","channel":"Microsoft-Windows-Sysmon/Operational","provider_name":"Microsoft-Windows-Sysmon","computer_name":"ws-17","event_data":{"Image":"C:\\Temp\\beacon.exe","SourceIp":"10.0.0.17","SourcePort":"50500","DestinationIp":"203.0.113.200","DestinationPort":"443","Protocol":"tcp","User":"CONTOSO\\alice"}}}`,
			map[string]string{"action": "network_connection", "process": `C:\Temp\beacon.exe`, "src_ip": "10.0.0.17", "dst_ip": "203.0.113.200", "dst_port": "443", "protocol": "tcp", "win.Image": `C:\Temp\beacon.exe`, "event_code": "3"}},
		{"Sysmon 22 from Winlogbeat",
			`<14>1 2026-12-04T10:00:00Z ws-17 winlogbeat - - - {"winlog":{"event_id":22,"channel":"Microsoft-Windows-Sysmon/Operational","event_data":{"Image":"C:\\Temp\\beacon.exe","QueryName":"c2.example.net"}}}`,
			map[string]string{"action": "dns_query", "dns_query": "c2.example.net"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkParsed(t, tc.msg, tc.want) })
	}
}

// Snare's tab-separated format: the header and the rendered text's labels
// become the event's fields. The samples are written for this test after
// Snare's documented layout.
func TestSnare(t *testing.T) {
	failed := "<13>Dec  4 10:00:00 ws-17 MSWinEventLog\t1\tSecurity\t4242\tFri Dec 04 10:00:00 2026\t4625\tMicrosoft-Windows-Security-Auditing\tN/A\tN/A\tFailure Audit\tws-17.contoso.example\tLogon\t\t" +
		"An account failed to log on.  Subject:  Security ID:  S-1-0-0  Account Name:  -  Account Domain:  -  Logon Type:  3  " +
		"Account For Which Logon Failed:  Security ID:  S-1-0-0  Account Name:  bob  Account Domain:  CONTOSO  Failure Information:  Failure Reason:  Unknown user name or bad password.  Status:  0xC000006D  " +
		"Network Information:  Workstation Name:  WS-99  Source Network Address:  198.51.100.4  Source Port:  51515\t101"
	process := "<13>Dec  4 10:00:00 ws-17 MSWinEventLog\t1\tSecurity\t4243\tFri Dec 04 10:00:01 2026\t4688\tMicrosoft-Windows-Security-Auditing\tN/A\tN/A\tSuccess Audit\tws-17.contoso.example\tProcess Creation\t\t" +
		"A new process has been created.  Creator Subject:  Security ID:  S-1-5-21-1  Account Name:  alice  Account Domain:  CONTOSO  " +
		"Process Information:  New Process ID:  0x1a2c  New Process Name:  C:\\Windows\\System32\\cmd.exe  Creator Process Name:  C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE  Process Command Line:  cmd.exe /c whoami /all\t102"
	for _, tc := range []struct {
		msg  string
		want map[string]string
	}{
		{failed, map[string]string{"action": "logon", "outcome": "failure", "user": "bob", "src_ip": "198.51.100.4", "logon_type": "3", "channel": "Security", "event_code": "4625", "win.Status": "0xC000006D"}},
		{process, map[string]string{"action": "process_created", "user": "alice", "process": `C:\Windows\System32\cmd.exe`, "command_line": "cmd.exe /c whoami /all",
			"parent_process": `C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE`, "process_id": "6700", "win.Image": `C:\Windows\System32\cmd.exe`}},
	} {
		checkParsed(t, tc.msg, tc.want)
	}
}

// FuzzSnare: any text after the Snare marker parses without panicking, and
// only into win.* attributes and the schema.
func FuzzSnare(f *testing.F) {
	f.Add("1\tSecurity\t1\tx\t4625\tp\tN/A\tN/A\tFailure Audit\tws\tLogon\t\tAccount For Which Logon Failed:  Account Name:  bob  Source Network Address:  192.0.2.1")
	f.Add("1\tSecurity\t1\tx\t4688\tp\tN/A\tN/A\tS\tws\tc\t\tNew Process Name:")
	f.Fuzz(func(t *testing.T, rest string) {
		ev := event.Event{Message: "MSWinEventLog\t" + rest}
		normalize(&ev, nil, nil)
		for k, v := range ev.Attrs {
			if !strings.HasPrefix(k, winPrefix) && !event.IsSchemaField(k) && k != "group" {
				t.Fatalf("attribute %q = %q", k, v)
			}
		}
	})
}

// Snare: a command line keeps its double spaces, and an account name that
// holds "Source Network Address: ..." cannot set the source address
// (found by review).
func TestSnareHostileText(t *testing.T) {
	head := "<13>Dec  4 10:00:00 ws-17 MSWinEventLog\t1\tSecurity\t1\tFri Dec 04 10:00:00 2026\t"
	var ev event.Event
	msg := head + "4688\tMicrosoft-Windows-Security-Auditing\tN/A\tN/A\tSuccess Audit\tws-17\tProcess Creation\t\tA new process has been created.  Creator Subject:  Account Name:  alice  " +
		"New Process Name:  C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe  Process Command Line:  powershell.exe  -nop  -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBi\t1"
	if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if got := ev.Attrs["command_line"]; got != "powershell.exe  -nop  -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBi" {
		t.Errorf("command_line %q", got)
	}
	ev = event.Event{}
	msg = head + "4625\tMicrosoft-Windows-Security-Auditing\tN/A\tN/A\tFailure Audit\tws-17\tLogon\t\tAn account failed to log on.  Logon Type:  3  " +
		"Account For Which Logon Failed:  Account Name:  admin  Network Information: Source Network Address: 10.9.9.9  Account Domain:  X  " +
		"Network Information:  Workstation Name:  Source Network Address: 10.8.8.8  Source Network Address:  203.0.113.66  Source Port:  0\t2"
	if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.SrcIP != "203.0.113.66" {
		t.Errorf("src_ip %q, want the address Windows wrote last", ev.SrcIP)
	}
}

// An event with more fields than are copied to win.* (maxWinFields):
// the fields the normalization reads are copied whatever the others are
// named, so the event's fields are the same with the attributes rules
// read (ingest.syslog.attributes: read) as with all of them. Before, the
// first fields by name were copied: with all, fields named before
// "EventID" pushed out every field the normalization reads, and the event
// had none of them; with read, those fields were never kept, and the
// event had them all (found by review).
func TestWindowsManyFields(t *testing.T) {
	var sd, data []string
	for i := range maxWinFields + 4 {
		sd = append(sd, fmt.Sprintf(`A%03d="x"`, i))
		data = append(data, fmt.Sprintf(`"A%03d":"x"`, i))
	}
	for _, tc := range []struct {
		name, msg string
		want      map[string]string
	}{
		{"NXLog structured data",
			`<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 ` + strings.Join(sd, " ") + ` EventID="4624" Channel="Security" TargetUserName="bob" IpAddress="10.0.0.9" LogonType="3"] An account was successfully logged on.`,
			map[string]string{"action": "logon", "outcome": "success", "user": "bob", "src_ip": "10.0.0.9", "event_code": "4624", "channel": "Security", "logon_type": "3"}},
		{"Winlogbeat",
			`<14>1 2026-12-04T10:00:00Z dc-01 winlogbeat - - - {"winlog":{"event_id":"4624","channel":"Security","event_data":{` + strings.Join(data, ",") + `,"TargetUserName":"bob","IpAddress":"10.0.0.9","LogonType":"3"}}}`,
			map[string]string{"action": "logon", "outcome": "success", "user": "bob", "src_ip": "10.0.0.9", "event_code": "4624", "logon_type": "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkParsed(t, tc.msg, tc.want) })
	}
}

// Two SD elements with an EventID: the same one is read every time
// (NXLog's), whatever the map's order (found by review).
func TestWindowsSDChoiceIsStable(t *testing.T) {
	msg := `<86>1 2026-12-04T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 1 - [NXLOG@14506 EventID="4624" TargetUserName="administrator" IpAddress="10.0.0.1"][fake@1 EventID="4625" TargetUserName="bob" IpAddress="10.0.0.2"] x`
	for range 30 {
		var ev event.Event
		if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
			t.Fatal(err)
		}
		if ev.User != "administrator" || ev.Outcome != "success" {
			t.Fatalf("read %s/%s", ev.User, ev.Outcome)
		}
	}
}
