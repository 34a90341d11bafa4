package azure

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// template is one ARM template, or a nested template with inner
// expression scope (its own parameters and variables).
type template struct {
	Schema         string               `json:"$schema"`
	ContentVersion string               `json:"contentVersion"`
	Parameters     map[string]parameter `json:"parameters"`
	Variables      map[string]any       `json:"variables"`
	Resources      []map[string]any     `json:"resources"`
	Outputs        map[string]any       `json:"outputs"`
	raw            map[string]any
	where          string // file, and the path of a nested template in it
}

type parameter struct {
	Type          string `json:"type"`
	DefaultValue  any    `json:"defaultValue"`
	AllowedValues []any  `json:"allowedValues"`
}

type copyLoop struct {
	Name  string `json:"name"`
	Count any    `json:"count"`
	Input any    `json:"input"`
}

// schemaScopes are the deployment schemas a template may name, and the
// scope each deploys at.
var schemaScopes = map[string]string{
	"https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#":                "resourceGroup",
	"https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentTemplate.json#":    "subscription",
	"https://schema.management.azure.com/schemas/2019-08-01/managementGroupDeploymentTemplate.json#": "managementGroup",
	"https://schema.management.azure.com/schemas/2019-08-01/tenantDeploymentTemplate.json#":          "tenant",
}

// topLevelKeys are the keys ARM reads at the top of a template.
var topLevelKeys = []string{"$schema", "contentVersion", "apiProfile", "metadata", "parameters", "functions",
	"variables", "resources", "outputs"}

var parameterTypes = []string{"string", "securestring", "int", "bool", "object", "secureobject", "array"}

func decodeTemplate(data []byte, where string) (*template, error) {
	var t template
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &t.raw); err != nil {
		return nil, err
	}
	t.where = where
	return &t, nil
}

// loadTemplates reads every *.json in this directory.
func loadTemplates(t *testing.T) map[string]*template {
	t.Helper()
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no templates found")
	}
	out := make(map[string]*template)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tm, err := decodeTemplate(data, f)
		if err != nil {
			t.Fatalf("%s: not JSON: %v", f, err)
		}
		out[f] = tm
	}
	return out
}

// variableLoop returns the variables.copy entry that declares name.
func (t *template) variableLoop(name string) (copyLoop, bool) {
	loops, _ := t.Variables["copy"].([]any)
	for _, l := range loops {
		data, _ := json.Marshal(l)
		var c copyLoop
		if json.Unmarshal(data, &c) == nil && c.Name == name {
			return c, true
		}
	}
	return copyLoop{}, false
}

// site is one string of a template, with its JSON path.
type site struct {
	path  string
	value string
}

// level is a template whose expressions resolve against its own
// parameters and variables: a file, or a nested deployment with inner
// scope.
type level struct {
	tmpl  *template
	sites []site
}

// levels splits a template into its levels. A nested deployment must use
// inner scope: with outer scope its expressions would resolve against this
// template's parameters while its resources are deployed elsewhere, which
// the checks below do not model.
func (t *template) levels() ([]*level, error) {
	l := &level{tmpl: t}
	out := []*level{l}
	var nested []*template
	var err error
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case string:
			l.sites = append(l.sites, site{path, v})
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s[%d]", path, i))
			}
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(v[k], path+"."+k)
			}
		}
	}
	for _, k := range []string{"parameters", "variables", "outputs"} {
		walk(t.raw[k], k)
	}
	resources, _ := t.raw["resources"].([]any)
	for i, r := range resources {
		path := fmt.Sprintf("resources[%d]", i)
		res, _ := r.(map[string]any)
		props, _ := res["properties"].(map[string]any)
		inner, isNested := props["template"].(map[string]any)
		if typ, _ := res["type"].(string); !strings.EqualFold(typ, "Microsoft.Resources/deployments") || !isNested {
			walk(r, path)
			continue
		}
		opts, _ := props["expressionEvaluationOptions"].(map[string]any)
		if scope, _ := opts["scope"].(string); !strings.EqualFold(scope, "inner") {
			err = fmt.Errorf("%s: %s: a nested template must set expressionEvaluationOptions.scope inner", t.where, path)
			continue
		}
		// The deployment resource itself is of this level, its template is not.
		shallow := make(map[string]any, len(res))
		for k, v := range res {
			shallow[k] = v
		}
		p2 := make(map[string]any, len(props))
		for k, v := range props {
			if k != "template" {
				p2[k] = v
			}
		}
		shallow["properties"] = p2
		walk(shallow, path)
		data, _ := json.Marshal(inner)
		nt, derr := decodeTemplate(data, t.where+": "+path+".properties.template")
		if derr != nil {
			err = derr
			continue
		}
		nested = append(nested, nt)
	}
	for _, nt := range nested {
		ls, nerr := nt.levels()
		if nerr != nil {
			err = nerr
		}
		out = append(out, ls...)
	}
	return out, err
}

func allLevels(t *testing.T) []*level {
	t.Helper()
	var out []*level
	tmpls := loadTemplates(t)
	files := make([]string, 0, len(tmpls))
	for f := range tmpls {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		ls, err := tmpls[f].levels()
		if err != nil {
			t.Error(err)
		}
		out = append(out, ls...)
	}
	return out
}

// expressions parses every expression of a level; a string that does not
// parse is a problem.
func (l *level) expressions(errs *[]error) map[string]*node {
	out := make(map[string]*node)
	for _, s := range l.sites {
		n, ok, err := parseTemplateString(s.value)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %s: %q: %w", l.tmpl.where, s.path, s.value, err))
			continue
		}
		if ok {
			out[s.path] = n
		}
	}
	return out
}

// check is one rule over one level; it returns every problem it finds.
type check func(l *level) []error

// runCheck applies c to every level of every template here.
func runCheck(t *testing.T, c check) {
	t.Helper()
	for _, l := range allLevels(t) {
		for _, err := range c(l) {
			t.Error(err)
		}
	}
}

func TestTemplatesAreARM(t *testing.T) {
	for f, tm := range loadTemplates(t) {
		if _, ok := schemaScopes[tm.Schema]; !ok {
			t.Errorf("%s: $schema %q is not a deployment template schema", f, tm.Schema)
		}
		if !regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`).MatchString(tm.ContentVersion) {
			t.Errorf("%s: contentVersion %q, want like 1.0.0.0", f, tm.ContentVersion)
		}
		for k := range tm.raw {
			if !slices.Contains(topLevelKeys, k) {
				t.Errorf("%s: unknown top-level key %q", f, k)
			}
		}
		if len(tm.Resources) == 0 {
			t.Errorf("%s: no resources", f)
		}
		for name, p := range tm.Parameters {
			if !slices.Contains(parameterTypes, strings.ToLower(p.Type)) {
				t.Errorf("%s: parameters.%s: type %q", f, name, p.Type)
			}
		}
	}
}

// checkReferences: every parameters('x'), variables('x') and
// copyIndex('x') names a parameter, variable or copy loop its template
// declares, by a literal name.
func checkReferences(l *level) []error {
	var errs []error
	loops := map[string]bool{}
	if vl, ok := l.tmpl.Variables["copy"].([]any); ok {
		for _, c := range vl {
			m, _ := c.(map[string]any)
			name, _ := m["name"].(string)
			loops[name] = true
		}
	}
	for _, r := range l.tmpl.Resources {
		if c, ok := r["copy"].(map[string]any); ok {
			name, _ := c["name"].(string)
			loops[name] = true
		}
	}
	for path, n := range l.expressions(&errs) {
		n.walk(func(c *node) {
			switch {
			case c.is("parameters"), c.is("variables"):
			case c.is("copyIndex") && len(c.args) > 0 && c.args[0].kind == nodeString:
				if !loops[c.args[0].text] {
					errs = append(errs, fmt.Errorf("%s: %s: %s: no copy loop of that name", l.tmpl.where, path, c))
				}
				return
			default:
				return
			}
			name, ok := c.literalArg(0)
			if !ok || len(c.args) != 1 {
				errs = append(errs, fmt.Errorf("%s: %s: %s: want one literal name", l.tmpl.where, path, c))
				return
			}
			var declared bool
			if c.is("parameters") {
				_, declared = l.tmpl.Parameters[name]
			} else {
				_, declared = l.tmpl.Variables[name]
				declared = (declared && name != "copy") || loops[name]
			}
			if !declared {
				errs = append(errs, fmt.Errorf("%s: %s: %s is not declared", l.tmpl.where, path, c))
			}
		})
	}
	return errs
}

func TestReferencesResolve(t *testing.T) { runCheck(t, checkReferences) }

var (
	resourceTypeRE = regexp.MustCompile(`^[A-Za-z0-9]+\.[A-Za-z0-9.]+(/[A-Za-z0-9]+)+$`)
	guidRE         = regexp.MustCompile(`^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$`)
	apiVersionRE   = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-preview)?$`)
	resourceIDFns  = []string{"resourceId", "subscriptionResourceId", "tenantResourceId", "extensionResourceId"}
)

// nameSegments splits a resource's name into the segments a resourceId
// call names it by, each rendered as an expression term: "a/b" is 'a' and
// 'b'; "[format('{0}/{1}', x, y)]" is x and y; any other expression is
// one segment.
func nameSegments(name string) []string {
	n, ok, err := parseTemplateString(name)
	if err != nil {
		return nil
	}
	if !ok {
		var out []string
		for _, s := range strings.Split(name, "/") {
			out = append(out, (&node{kind: nodeString, text: s}).String())
		}
		return out
	}
	if f, isLit := n.literalArg(0); n.is("format") && isLit && len(n.access) == 0 &&
		regexp.MustCompile(`^\{\d+\}(/\{\d+\})*$`).MatchString(f) {
		var out []string
		for _, item := range strings.Split(f, "/") {
			var k int
			fmt.Sscanf(item, "{%d}", &k)
			if k+1 >= len(n.args) {
				return nil
			}
			out = append(out, n.args[k+1].String())
		}
		return out
	}
	return []string{n.String()}
}

// checkResourceID applies the rule for one resourceId-family call c at a
// level; internalOnly is set for dependsOn, which may name only resources
// of the template. The rule:
//   - the resource type is a string literal;
//   - if the call names no subscription or resource group before the type
//     and the level declares a resource of that type, it is a reference to
//     that resource: the name arguments, one per segment of the type, must
//     be the very terms the resource's name is made of;
//   - otherwise it is external, and every name argument must come from the
//     deployer (contain a parameters() call) or be a literal GUID (a
//     built-in role definition). An external id built from a variable or a
//     literal is refused: it is most likely a typo of a local resource.
func checkResourceID(l *level, c *node, internalOnly bool) error {
	typeAt := -1
	for i := range c.args {
		if s, ok := c.literalArg(i); ok && resourceTypeRE.MatchString(s) {
			typeAt = i
			break
		}
	}
	if typeAt < 0 {
		return fmt.Errorf("%s: no literal resource type", c)
	}
	typ := c.args[typeAt].text
	names := c.args[typeAt+1:]
	qualified := typeAt > 0 && !c.is("extensionResourceId")
	var declared []map[string]any
	for _, r := range l.tmpl.Resources {
		if rt, _ := r["type"].(string); strings.EqualFold(rt, typ) {
			declared = append(declared, r)
		}
	}
	if !qualified && len(declared) > 0 {
		if want := strings.Count(typ, "/"); len(names) != want {
			return fmt.Errorf("%s: %d names for %s, which takes %d", c, len(names), typ, want)
		}
		for _, r := range declared {
			rn, _ := r["name"].(string)
			segs := nameSegments(rn)
			if len(segs) != len(names) {
				continue
			}
			match := true
			for i := range segs {
				if segs[i] != names[i].String() {
					match = false
				}
			}
			if match {
				return nil
			}
		}
		return fmt.Errorf("%s: no %s of the template has that name", c, typ)
	}
	if internalOnly {
		return fmt.Errorf("%s: dependsOn names a resource this template does not declare", c)
	}
	for _, n := range names {
		fromParam := len(n.calls("parameters")) > 0
		if !fromParam && !(n.kind == nodeString && guidRE.MatchString(n.text)) {
			return fmt.Errorf("%s: external %s whose name %s comes from no parameter", c, typ, n)
		}
	}
	return nil
}

// checkResourceIDs applies checkResourceID to every resourceId-family
// call, and requires every dependsOn entry to name a resource (or copy
// loop) of its template.
func checkResourceIDs(l *level) []error {
	var errs []error
	for path, n := range l.expressions(&errs) {
		n.walk(func(c *node) {
			if slices.ContainsFunc(resourceIDFns, c.is) {
				if err := checkResourceID(l, c, false); err != nil {
					errs = append(errs, fmt.Errorf("%s: %s: %w", l.tmpl.where, path, err))
				}
			}
		})
	}
	names := map[string]bool{}
	for _, r := range l.tmpl.Resources {
		if n, ok := r["name"].(string); ok && !isExpression(n) {
			names[n] = true
		}
		if c, ok := r["copy"].(map[string]any); ok {
			n, _ := c["name"].(string)
			names[n] = true
		}
	}
	for i, r := range l.tmpl.Resources {
		deps, _ := r["dependsOn"].([]any)
		for j, d := range deps {
			where := fmt.Sprintf("%s: resources[%d].dependsOn[%d]", l.tmpl.where, i, j)
			s, _ := d.(string)
			n, ok, err := parseTemplateString(s)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			case !ok:
				if !names[s] {
					errs = append(errs, fmt.Errorf("%s: %q is no resource or copy loop of the template", where, s))
				}
			case !slices.ContainsFunc(resourceIDFns, n.is) || len(n.access) > 0:
				errs = append(errs, fmt.Errorf("%s: %s: want a resourceId() of a resource of the template", where, n))
			default:
				if err := checkResourceID(l, n, true); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", where, err))
				}
			}
		}
	}
	return errs
}

func TestResourceIDsNameDeclaredResources(t *testing.T) { runCheck(t, checkResourceIDs) }

// checkAPIVersions: every resource has an apiVersion that is a date (a
// literal, not an expression), and so has every reference() that gives
// one.
func checkAPIVersions(l *level) []error {
	var errs []error
	for i, r := range l.tmpl.Resources {
		v, _ := r["apiVersion"].(string)
		if !apiVersionRE.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s: resources[%d] (%v): apiVersion %q is not a pinned date", l.tmpl.where, i, r["type"], r["apiVersion"]))
		}
		if _, nested := r["resources"]; nested {
			errs = append(errs, fmt.Errorf("%s: resources[%d]: child resources inside a resource are not checked here; declare them at the top", l.tmpl.where, i))
		}
	}
	for path, n := range l.expressions(&errs) {
		for _, c := range n.calls("reference") {
			if len(c.args) < 2 {
				continue
			}
			if v, ok := c.literalArg(1); !ok || !apiVersionRE.MatchString(v) {
				errs = append(errs, fmt.Errorf("%s: %s: %s: the apiVersion is not a pinned date", l.tmpl.where, path, c))
			}
		}
	}
	return errs
}

func TestAPIVersionsPinned(t *testing.T) { runCheck(t, checkAPIVersions) }

var secretNameRE = regexp.MustCompile(`(?i)password|passwd|secret|token|key|credential|connectionstring|sas`)

// checkSecrets: a secure parameter, or one whose name says it is a secret,
// has no default; a secure parameter never reaches an output.
func checkSecrets(l *level) []error {
	var errs []error
	for name, p := range l.tmpl.Parameters {
		secure := strings.HasPrefix(strings.ToLower(p.Type), "secure")
		if (secure || secretNameRE.MatchString(name)) && p.DefaultValue != nil {
			errs = append(errs, fmt.Errorf("%s: parameters.%s (%s) has a default value", l.tmpl.where, name, p.Type))
		}
	}
	for path, n := range l.expressions(&errs) {
		if !strings.HasPrefix(path, "outputs.") {
			continue
		}
		for _, c := range n.calls("parameters") {
			name, _ := c.literalArg(0)
			if strings.HasPrefix(strings.ToLower(l.tmpl.Parameters[name].Type), "secure") {
				errs = append(errs, fmt.Errorf("%s: %s: outputs the secure parameter %s", l.tmpl.where, path, name))
			}
		}
	}
	return errs
}

func TestNoSecretDefaults(t *testing.T) { runCheck(t, checkSecrets) }
