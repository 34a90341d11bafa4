package azure

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "copy cloud-init.yaml into outpost.json's variables.cloudInit")

const (
	cloudInitFile = "cloud-init.yaml"
	vmTemplate    = "outpost.json"
	outpostConfig = "/etc/outpost/outpost.yaml"
	installScript = "/usr/local/sbin/outpost-install"
)

// Sample deployment: the parameters a user passes and what subscription()
// and friends return. Addresses in the config are loopback or from the
// documentation ranges; the SIEM address is loopback because check-config
// may come to resolve it.
var (
	sampleParams = map[string]any{
		"adminSshPublicKey":    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKq3sample admin@example",
		"subnetId":             "/subscriptions/8d2e4f6a-1b3c-4e5d-9f7a-2c4e6a8b0d1f/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-hub/subnets/outpost",
		"syslogSourcePrefixes": []any{"10.20.0.0/16", "192.0.2.10"},
		"managementPrefix":     "10.99.0.0/24",
		"logStorageAccounts":   []any{"prodlogs", "netlogs"},
		"siemAddress":          "127.0.0.1:6514",
		"siemTransport":        "tls",
		// A SAS URL with the characters a shell or YAML would trip on.
		"packageUrl":    "https://releases.blob.core.windows.net/outpost/outpost_1.0.0_amd64.deb?sv=2024-05-04&sp=r&sig=a%2Fb'c\"$(x)",
		"packageSha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	}
	sampleContext = map[string]any{
		"subscription":  map[string]any{"tenantId": "3f6c1e2a-9b47-4d21-a8e5-7c0d2b9f4e13", "subscriptionId": "8d2e4f6a-1b3c-4e5d-9f7a-2c4e6a8b0d1f"},
		"resourcegroup": map[string]any{"name": "rg-outpost", "location": "westeurope"},
		"environment":   map[string]any{"suffixes": map[string]any{"storage": "core.windows.net"}},
	}
)

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// vmResource returns the template's VM.
func vmResource(t *testing.T, tm *template) map[string]any {
	t.Helper()
	for _, r := range tm.Resources {
		if r["type"] == "Microsoft.Compute/virtualMachines" {
			return r
		}
	}
	t.Fatal("no Microsoft.Compute/virtualMachines in " + vmTemplate)
	return nil
}

func customDataExpr(t *testing.T, tm *template) string {
	t.Helper()
	props, _ := vmResource(t, tm)["properties"].(map[string]any)
	os, _ := props["osProfile"].(map[string]any)
	s, _ := os["customData"].(string)
	return s
}

// renderCloudInit evaluates the VM's customData as ARM would for the
// sample deployment and decodes it: the user data the VM gets.
func renderCloudInit(t *testing.T) string {
	t.Helper()
	tm := loadTemplates(t)[vmTemplate]
	v, err := newEvaluator(tm, sampleParams, sampleContext).value(customDataExpr(t, tm))
	if err != nil {
		t.Fatalf("evaluating customData: %v", err)
	}
	s, _ := v.(string)
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("customData is not base64: %v", err)
	}
	return string(data)
}

// TestCloudInitCopyInTemplate: the template carries cloud-init.yaml as it
// is (ARM JSON cannot read a file at deploy time); -update copies it in.
func TestCloudInitCopyInTemplate(t *testing.T) {
	want := readFile(t, cloudInitFile)
	text := readFile(t, vmTemplate)
	line := regexp.MustCompile(`(?m)^(\s*"cloudInit": )".*"$`)
	if *update {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		if len(line.FindAllString(text, -1)) != 1 {
			t.Fatalf("%s: want exactly one line `\"cloudInit\": \"...\"` to replace", vmTemplate)
		}
		enc2 := strings.TrimSuffix(b.String(), "\n")
		text = line.ReplaceAllLiteralString(text, line.FindStringSubmatch(text)[1]+enc2)
		if err := os.WriteFile(vmTemplate, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tm := loadTemplates(t)[vmTemplate]
	if got, _ := tm.Variables["cloudInit"].(string); got != want {
		t.Errorf("%s variables.cloudInit differs from %s; run go test ./deploy/azure -run TestCloudInitCopyInTemplate -update", vmTemplate, cloudInitFile)
	}
}

// TestCustomDataPlaceholders: customData replaces exactly the @@name@@
// placeholders cloud-init.yaml has, each once, and none is left over.
func TestCustomDataPlaceholders(t *testing.T) {
	placeholderRE := regexp.MustCompile(`@@[A-Za-z0-9]+@@`)
	inFile := map[string]bool{}
	for _, p := range placeholderRE.FindAllString(readFile(t, cloudInitFile), -1) {
		inFile[p] = true
	}
	tm := loadTemplates(t)[vmTemplate]
	n, ok, err := parseTemplateString(customDataExpr(t, tm))
	if err != nil || !ok || !n.is("base64") || len(n.args) != 1 {
		t.Fatalf("customData: want [base64(replace(...))], got %v", err)
	}
	replaced := map[string]bool{}
	for cur := n.args[0]; ; cur = cur.args[0] {
		if cur.is("variables") {
			if name, _ := cur.literalArg(0); name != "cloudInit" {
				t.Errorf("customData starts from %s, want variables('cloudInit')", cur)
			}
			break
		}
		if !cur.is("replace") || len(cur.args) != 3 {
			t.Fatalf("customData: %s is neither replace() nor variables('cloudInit')", cur)
		}
		p, ok := cur.literalArg(1)
		if !ok || !inFile[p] || replaced[p] {
			t.Errorf("customData replaces %s: not a placeholder of %s, or twice", cur.args[1], cloudInitFile)
		}
		replaced[p] = true
	}
	for p := range inFile {
		if !replaced[p] {
			t.Errorf("%s has %s, which customData does not replace", cloudInitFile, p)
		}
	}
	if left := placeholderRE.FindAllString(renderCloudInit(t), -1); len(left) > 0 {
		t.Errorf("placeholders left after substitution: %v", left)
	}
}

type cloudConfig struct {
	WriteFiles []struct {
		Path    string `yaml:"path"`
		Content string `yaml:"content"`
	} `yaml:"write_files"`
}

// writtenFile returns the content cloud-init writes to path.
func writtenFile(t *testing.T, userData, path string) string {
	t.Helper()
	var cc cloudConfig
	if err := yaml.Unmarshal([]byte(userData), &cc); err != nil {
		t.Fatalf("user data is not YAML: %v", err)
	}
	for _, f := range cc.WriteFiles {
		if f.Path == path {
			return f.Content
		}
	}
	t.Fatalf("user data writes no %s", path)
	return ""
}

// needTool skips when a tool is missing, except in CI (CI=true), where
// .ci/run installs it and its absence is a failure.
func needTool(t *testing.T, name, install string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	msg := name + " is needed (" + install + ")"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure")
	}
	t.Skip(msg)
	return ""
}

// TestCloudInitSchema: the user data the sample deployment produces passes
// Debian's `cloud-init schema`, and the install script is valid sh that
// gets the package URL byte for byte.
func TestCloudInitSchema(t *testing.T) {
	userData := renderCloudInit(t)
	if !strings.HasPrefix(userData, "#cloud-config\n") {
		t.Fatal("user data does not start with #cloud-config")
	}
	script := writtenFile(t, userData, installScript)
	if !strings.Contains(script, "\n"+sampleParams["packageUrl"].(string)+"\n") {
		t.Errorf("%s does not carry the package URL on a line of its own", installScript)
	}
	dir := t.TempDir()
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("%s: sh -n: %v\n%s", installScript, err, out)
	}
	bin := needTool(t, "cloud-init", "Debian: apt-get install cloud-init")
	file := filepath.Join(dir, "user-data.yaml")
	if err := os.WriteFile(file, []byte(userData), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "schema", "--config-file", file)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
		t.Errorf("cloud-init schema: %v\n%s", err, out)
	}
}

// TestCloudInitConfigChecks: the outpost.yaml the user data writes passes
// `outpost check-config`, run from a binary built from this tree. Two
// changes are made to the copy it checks, and only these: data_dir points
// at a temp dir (the data disk does not exist here, and check-config
// measures data_dir's file system), and 0.0.0.0 becomes 127.0.0.1 (tests
// use loopback only, and check-config may come to bind what it listens
// on).
func TestCloudInitConfigChecks(t *testing.T) {
	cfg := writtenFile(t, renderCloudInit(t), outpostConfig)
	for _, want := range []string{`"url":"https://prodlogs.blob.core.windows.net/"`, `"auth":"managed_identity"`,
		`tenantId=3f6c1e2a-9b47-4d21-a8e5-7c0d2b9f4e13/`, `resourceId=/SUBSCRIPTIONS/8D2E4F6A-1B3C-4E5D-9F7A-2C4E6A8B0D1F/`,
		`"address":"127.0.0.1:6514"`, `"transport":"tls"`, `"0.0.0.0:514": ["10.20.0.0/16","192.0.2.10"]`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("the config lacks %s:\n%s", want, cfg)
		}
	}
	dir := t.TempDir()
	dataLine := regexp.MustCompile(`(?m)^data_dir: /var/lib/outpost\b.*$`)
	if n := len(dataLine.FindAllString(cfg, -1)); n != 1 {
		t.Fatalf("want one data_dir: /var/lib/outpost line, found %d", n)
	}
	cfg = dataLine.ReplaceAllLiteralString(cfg, "data_dir: "+filepath.Join(dir, "data"))
	cfg = strings.ReplaceAll(cfg, "0.0.0.0", "127.0.0.1")
	file := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "outpost")
	build := exec.Command("go", "build", "-o", bin, "./cmd/outpost")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "check-config", "-c", file).CombinedOutput()
	if err != nil {
		t.Fatalf("outpost check-config: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
	if !strings.Contains(string(out), "config OK") {
		t.Errorf("outpost check-config said: %s", out)
	}
}
