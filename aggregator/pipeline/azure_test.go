package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob"
	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob/azuritetest"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// TestAzureSignInsEndToEnd: Entra ID sign-in blobs and an NSG flow-log
// blob in Azurite, laid out as Azure writes them, go through the whole
// appliance; ten failed sign-ins from one address raise the shipped rule
// "Entra ID sign-in failures from one IP", and an NSG flow allowing the same
// address in on RDP raises "Management port reachable from the Internet";
// each CEF reaches the TCP SIEM receiver once. The storage connection string comes from the environment,
// as in production configs.
func TestAzureSignInsEndToEnd(t *testing.T) {
	conn := azuritetest.Start(t)
	az, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const tenant = "3f6c1e2a-9b47-4d21-a8e5-7c0d2b9f4e13"
	now := time.Now().UTC()
	hour := fmt.Sprintf("y=%04d/m=%02d/d=%02d/h=%02d/m=00/", now.Year(), int(now.Month()), now.Day(), now.Hour())

	appendTo := func(container, name, data string) {
		t.Helper()
		ab := az.ServiceClient().NewContainerClient(container).NewAppendBlobClient(name)
		if _, err := ab.GetProperties(ctx, nil); err != nil {
			if _, err := ab.Create(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ab.AppendBlock(ctx, streaming.NopCloser(strings.NewReader(data)), nil); err != nil {
			t.Fatal(err)
		}
	}
	signIn := func(n int, ip, user, code string) string {
		at := now.Add(-5*time.Minute + time.Duration(n)*time.Second).Format(time.RFC3339Nano)
		return fmt.Sprintf(`{"time":"%s","resourceId":"/tenants/%s/providers/Microsoft.aadiam","operationName":"Sign-in activity","category":"SignInLogs","tenantId":"%s","resultType":"%s","callerIpAddress":"%s","Level":4,"properties":{"id":"e2e-%d","createdDateTime":"%s","userPrincipalName":"%s","appDisplayName":"Azure Portal","ipAddress":"%s","status":{"errorCode":%s}}}`+"\n",
			at, tenant, tenant, code, ip, n, at, user, ip, code)
	}
	for _, c := range []string{"insights-logs-signinlogs", "insights-logs-noninteractiveusersigninlogs", "insights-logs-networksecuritygroupflowevent"} {
		if _, err := az.CreateContainer(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	signins := "tenantId=" + tenant + "/" + hour + "PT1H.json"
	// Benign: successes, a few failures from many addresses, MFA
	// interrupts from one address (not credential failures).
	var benign strings.Builder
	for i := range 12 {
		benign.WriteString(signIn(i, fmt.Sprintf("198.51.100.%d", i), "kim@fabrikam.example", "0"))
		if i%3 == 0 {
			benign.WriteString(signIn(100+i, fmt.Sprintf("192.0.2.%d", i), "kim@fabrikam.example", "50126"))
		}
		benign.WriteString(signIn(200+i, "198.51.100.250", "lee@fabrikam.example", "50074"))
	}
	appendTo("insights-logs-signinlogs", signins, benign.String())
	nsgBlob := "resourceId=/SUBSCRIPTIONS/8D2E4F6A-1B3C-4E5D-9F7A-2C4E6A8B0D1F/RESOURCEGROUPS/RG-WEB/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-WEB/" + hour + "macAddress=000D3A1B2C3D/PT1H.json"
	bb := az.ServiceClient().NewContainerClient("insights-logs-networksecuritygroupflowevent").NewBlockBlobClient(nsgBlob)
	rec := fmt.Sprintf(`{"time":"%s","category":"NetworkSecurityGroupFlowEvent","resourceId":"/SUBSCRIPTIONS/X/NETWORKSECURITYGROUPS/NSG-WEB","properties":{"Version":2,"flows":[{"rule":"DefaultRule_DenyAllInBound","flows":[{"mac":"000D3A1B2C3D","flowTuples":["%d,203.0.113.77,10.50.0.4,40022,22,T,I,D,B,,,,"]}]}]}}`, now.Format(time.RFC3339), now.Unix())
	for id, data := range map[string]string{"QQ==": `{"records":[`, "Qg==": rec, "Wg==": `]}`} {
		if _, err := bb.StageBlock(ctx, id, streaming.NopCloser(strings.NewReader(data)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bb.CommitBlockList(ctx, []string{"QQ==", "Qg==", "Wg=="}, nil); err != nil {
		t.Fatal(err)
	}

	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	t.Setenv("OUTPOST_TEST_AZURE_CONN", conn)
	cfg.Ingest.AzureBlob = azureblob.Config{
		PollInterval:      200 * time.Millisecond,
		DiscoveryInterval: time.Second,
		Accounts: []azureblob.Account{{
			Name: "logs", Auth: azureblob.AuthConnectionString,
			ConnectionString: azureblob.Secret{Env: "OUTPOST_TEST_AZURE_CONN"},
			Containers: []azureblob.Container{
				{Name: "insights-logs-signinlogs"},
				{Name: "insights-logs-noninteractiveusersigninlogs"},
				{Name: "insights-logs-networksecuritygroupflowevent"},
			},
		}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := start(t, cfg)
	benignEvents := float64(12 + 4 + 12 + 1)
	waitFor(t, "the benign Azure events to reach the rule filter", func() bool { return p.counter("outpost_filter_events_total") == benignEvents })
	time.Sleep(500 * time.Millisecond)
	if got := siem.Messages(); len(got) != 0 {
		t.Fatalf("benign sign-ins raised alerts: %q", got)
	}

	// The attack: ten failed passwords from one address against several
	// accounts, half in the interactive blob, half non-interactive.
	attacker := "203.0.113.77"
	var a1, a2 strings.Builder
	for i := range 10 {
		line := signIn(300+i, attacker, fmt.Sprintf("user%d@fabrikam.example", i%4), "50126")
		if i%2 == 0 {
			a1.WriteString(line)
		} else {
			a2.WriteString(line)
		}
	}
	appendTo("insights-logs-signinlogs", signins, a1.String())
	appendTo("insights-logs-noninteractiveusersigninlogs", "tenantId="+tenant+"/"+hour+"PT1H.json", a2.String())
	// And the NSG lets the same address in on RDP: Network Watcher inserts
	// a record block before the tail and commits the list again.
	rec2 := fmt.Sprintf(`,{"time":"%s","category":"NetworkSecurityGroupFlowEvent","resourceId":"/SUBSCRIPTIONS/X/NETWORKSECURITYGROUPS/NSG-WEB","properties":{"Version":2,"flows":[{"rule":"UserRule_AllowRDP","flows":[{"mac":"000D3A1B2C3D","flowTuples":["%d,%s,10.50.0.4,40023,3389,T,I,A,B,,,,"]}]}]}}`, now.Format(time.RFC3339), now.Unix(), attacker)
	if _, err := bb.StageBlock(ctx, "Qw==", streaming.NopCloser(strings.NewReader(rec2)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bb.CommitBlockList(ctx, []string{"QQ==", "Qg==", "Qw==", "Wg=="}, nil); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got, err := siem.Wait(wctx, 2)
	if err != nil {
		t.Fatalf("want 2 alerts, got %d: %v", len(got), err)
	}
	time.Sleep(time.Second)
	if got = siem.Messages(); len(got) != 2 {
		t.Fatalf("got %d messages, want exactly 2: %q", len(got), got)
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"|entra-signin-failures-one-ip|Entra ID sign-in failures from one IP|", "cnt=10",
		"|management-port-exposed|Management port reachable from the Internet|", "dpt=3389",
		"src=" + attacker,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("CEF lacks %q:\n%s", want, all)
		}
	}
}

// Sigma rules over Azure logs read from Azurite in Azure's layout: a
// signinlogs value_count correlation (accounts per address) and an
// activitylogs detection (a Key Vault secret deleted) reach the SIEM as
// CEF; the sign-in failures alone raise nothing (the correlation does not
// generate its rule's alerts).
func TestSigmaAzureEndToEnd(t *testing.T) {
	conn := azuritetest.Start(t)
	az, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const tenant = "3f6c1e2a-9b47-4d21-a8e5-7c0d2b9f4e13"
	const sub = "8D2E4F6A-1B3C-4E5D-9F7A-2C4E6A8B0D1F"
	now := time.Now().UTC()
	hour := fmt.Sprintf("y=%04d/m=%02d/d=%02d/h=%02d/m=00/", now.Year(), int(now.Month()), now.Day(), now.Hour())
	for _, c := range []string{"insights-logs-signinlogs", "insights-activity-logs"} {
		if _, err := az.CreateContainer(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	appendTo := func(container, name, data string) {
		t.Helper()
		ab := az.ServiceClient().NewContainerClient(container).NewAppendBlobClient(name)
		if _, err := ab.GetProperties(ctx, nil); err != nil {
			if _, err := ab.Create(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ab.AppendBlock(ctx, streaming.NopCloser(strings.NewReader(data)), nil); err != nil {
			t.Fatal(err)
		}
	}
	attacker := "203.0.113.88"
	var signins strings.Builder
	for i := range 6 {
		at := now.Add(-4*time.Minute + time.Duration(i)*10*time.Second).Format(time.RFC3339Nano)
		user := fmt.Sprintf("user%d@fabrikam.example", i%4)
		// The last one used the password grant from a non-compliant
		// device: fields no parser keeps, which a Sigma rule reads from
		// the record.
		extra := ""
		if i == 5 {
			extra = `"authenticationProtocol":"ROPC","deviceDetail":{"deviceId":"","isCompliant":false},`
		}
		fmt.Fprintf(&signins, `{"time":"%s","resourceId":"/tenants/%s/providers/Microsoft.aadiam","operationName":"Sign-in activity","category":"SignInLogs","tenantId":"%s","resultType":"50126","resultDescription":"Invalid username or password.","callerIpAddress":"%s","Level":4,"properties":{%s"id":"sig-%d","createdDateTime":"%s","userPrincipalName":"%s","appDisplayName":"Azure Portal","ipAddress":"%s","status":{"errorCode":50126}}}`+"\n",
			at, tenant, tenant, attacker, extra, i, at, user, attacker)
	}
	appendTo("insights-logs-signinlogs", "tenantId="+tenant+"/"+hour+"PT1H.json", signins.String())
	kv := "/SUBSCRIPTIONS/" + sub + "/RESOURCEGROUPS/RG-SEC/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV-PROD/SECRETS/DB-PASSWORD"
	activity := fmt.Sprintf(`{"time":"%s","resourceId":"%s","operationName":"MICROSOFT.KEYVAULT/VAULTS/SECRETS/DELETE","category":"Administrative","resultType":"Success","resultSignature":"Succeeded.OK","callerIpAddress":"%s","correlationId":"c0ffee00-0000-4000-8000-000000000001","identity":{"claims":{"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn":"admin@fabrikam.example","ipaddr":"%s"}},"level":"Information","authorization":{"action":"Microsoft.KeyVault/vaults/secrets/delete","scope":"%s"},"properties":"{\"eventCategory\":\"Administrative\",\"entity\":\"%s\"}"}`+"\n",
		now.Add(-time.Minute).Format(time.RFC3339Nano), kv, attacker, attacker, kv, kv)
	appendTo("insights-activity-logs", "resourceId=/SUBSCRIPTIONS/"+sub+"/"+hour+"PT1H.json", activity)

	sigmaDir := t.TempDir()
	writeRules(t, sigmaDir, "signin.yml", `title: Entra ID password failure
id: 4e1d0c2b-0000-4000-8000-000000000001
name: entra_password_failure
status: stable
logsource: {product: azure, service: signinlogs}
detection:
  selection:
    ResultType: 50126
  condition: selection
---
title: Password spray against Entra ID from one address
id: 4e1d0c2b-0000-4000-8000-000000000002
status: stable
level: high
tags: [attack.credential-access, attack.t1110.003]
correlation:
  type: value_count
  rules: [entra_password_failure]
  group-by: [IPAddress]
  timespan: 10m
  condition: {field: UserPrincipalName, gte: 4}
---
title: Password grant from a non-compliant device
id: 4e1d0c2b-0000-4000-8000-000000000004
status: stable
level: low
logsource: {product: azure, service: signinlogs}
detection:
  selection:
    AuthenticationProtocol: ropc
    DeviceDetail.IsCompliant: 'false'
  condition: selection
`)
	writeRules(t, sigmaDir, "keyvault.yml", `title: Key Vault secret deleted
id: 4e1d0c2b-0000-4000-8000-000000000003
status: stable
level: medium
tags: [attack.impact, attack.t1485]
logsource: {product: azure, service: activitylogs}
detection:
  selection:
    operationName|endswith: '/secrets/delete'
    Authorization.Action|contains: keyvault
    Entity|contains: /vaults/kv-prod/
  condition: selection
fields: [ResourceId, Caller]
`)
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Ingest.Syslog = syslog.Config{}
	t.Setenv("OUTPOST_TEST_AZURE_CONN", conn)
	cfg.Ingest.AzureBlob = azureblob.Config{
		PollInterval:      200 * time.Millisecond,
		DiscoveryInterval: time.Second,
		Accounts: []azureblob.Account{{
			Name: "logs", Auth: azureblob.AuthConnectionString,
			ConnectionString: azureblob.Secret{Env: "OUTPOST_TEST_AZURE_CONN"},
			Containers:       []azureblob.Container{{Name: "insights-logs-signinlogs"}, {Name: "insights-activity-logs"}},
		}},
	}
	cfg.Rules.Dir = t.TempDir()
	writeRules(t, cfg.Rules.Dir, "none.yaml", "rules: []\n")
	cfg.Rules.Sigma = []string{sigmaDir}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := start(t, cfg)
	if n := len(p.Rules().Rules); n != 3 {
		t.Fatalf("%d rules running, want the correlation, the password grant and the Key Vault rule", n)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := siem.Wait(wctx, 3); err != nil {
		t.Fatalf("want 3 alerts: %v (got %q)", err, siem.Messages())
	}
	waitFor(t, "the 7 Azure events through the rule filter", func() bool { return p.counter("outpost_filter_events_total") == 7 })
	time.Sleep(500 * time.Millisecond)
	got := siem.Messages()
	if len(got) != 3 {
		t.Fatalf("got %d messages, want exactly 3: %q", len(got), got)
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"|4e1d0c2b-0000-4000-8000-000000000002|Password spray against Entra ID from one address|8|", "src=" + attacker, "T1110.003",
		"|4e1d0c2b-0000-4000-8000-000000000003|Key Vault secret deleted|5|", "suser=admin@fabrikam.example",
		"|4e1d0c2b-0000-4000-8000-000000000004|Password grant from a non-compliant device|3|",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("CEF lacks %q:\n%s", want, all)
		}
	}
}
