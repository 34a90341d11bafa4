package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/rules"
)

func execute(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestCheckConfig(t *testing.T) {
	// --static: the example listens on 0.0.0.0:514 and names a SIEM host;
	// the deployment checks are TestCheckConfigDeployment's, on loopback.
	out, err := execute("check-config", "--static", "-c", "../../deploy/outpost.example.yaml")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("config OK, %d rules enabled", len(set.Rules))) {
		t.Errorf("output: %s", out)
	}
	out, err = execute("check-config", "-c", "testdata/missing.yaml")
	if err == nil || !strings.Contains(out, "reading config") {
		t.Errorf("missing config: err %v, output %s", err, out)
	}
}

// A SAS token put in an account's url by mistake is a config error, and
// check-config's message must not quote the signature.
func TestCheckConfigRedactsSASInURL(t *testing.T) {
	example, err := os.ReadFile("../../deploy/outpost.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const sig = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
	accounts := `    accounts:
      - name: prodlogs
        url: https://prodlogs.blob.core.windows.net/?sv=2022-11-02&ss=b&srt=co&sp=rl&sig=` + sig + `
        auth: sas
        sas: {env: OUTPOST_TEST_SAS}
        containers: [{name: insights-logs-signinlogs}]
`
	cfg := strings.Replace(string(example), "    accounts: []\n", accounts, 1)
	if cfg == string(example) {
		t.Fatal("the example config has no `accounts: []` line to replace")
	}
	path := filepath.Join(t.TempDir(), "outpost.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := execute("check-config", "-c", path)
	if err == nil {
		t.Fatalf("check-config accepted a url with a query: %s", out)
	}
	if strings.Contains(out, sig) || strings.Contains(err.Error(), sig) || strings.Contains(out, "sig=") {
		t.Errorf("check-config printed the SAS signature:\n%s", out)
	}
	if !strings.Contains(out, "ingest.azure_blob.accounts[0].url") || !strings.Contains(out, "https://prodlogs.blob.core.windows.net/?[redacted]") {
		t.Errorf("the error should name the key and show the url without its query:\n%s", out)
	}
}

// check-config loads rules.dir as `outpost run` does: a rule file that is a
// symlink out of the directory is an error naming it.
func TestCheckConfigRefusesSymlinkOutOfRulesDir(t *testing.T) {
	example, err := os.ReadFile("../../deploy/outpost.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	dir := filepath.Join(base, "rules")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(base, "elsewhere.yaml")
	if err := os.WriteFile(outside, []byte("rules: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "linked.yaml")); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(example), "  dir: \"\"\n", "  dir: "+dir+"\n", 1)
	if cfg == string(example) {
		t.Fatal("the example config has no rules `dir: \"\"` line to replace")
	}
	path := filepath.Join(base, "outpost.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := execute("check-config", "-c", path)
	if err == nil || !strings.Contains(out, "linked.yaml: resolves outside the rules directory") {
		t.Errorf("err %v, output:\n%s", err, out)
	}
}

// check-config prints each problem on its own line, naming the file and
// the key (or the line, for what the YAML decoder found), and fails with a
// count.
func TestCheckConfigPrintsProblems(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		body  string
		lines []string
		err   string
	}{
		{"data_dir: /x\nlog: {level: chatty}\nnats: {replicas: 9}\nforwarder: {destinations: [{address: \"h:1\"}]}\n", []string{
			"outpost.yaml: log.level: \"chatty\" must be debug, info, warn or error\n",
			"outpost.yaml: nats.replicas: must be 1 to 5, got 9\n",
		}, "outpost.yaml: invalid config: 2 problems"},
		{"data_dir: /x\nnats:\n  urll: nats://x\n", []string{
			"outpost.yaml: line 3: field urll not found in type bus.Config\n",
		}, "outpost.yaml: invalid config: 1 problem"},
	} {
		path := filepath.Join(dir, "outpost.yaml")
		if err := os.WriteFile(path, []byte(tt.body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := execute("check-config", "-c", path)
		if err == nil || !strings.HasSuffix(err.Error(), tt.err) {
			t.Errorf("err %v, want one ending %q", err, tt.err)
		}
		for _, l := range tt.lines {
			if !strings.Contains(out, dir+string(filepath.Separator)+l) {
				t.Errorf("output lacks the line %q:\n%s", l, out)
			}
		}
	}
}
