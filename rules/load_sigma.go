package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/outpost-siem/outpost/aggregator/event"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing/fstest"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/rules/sigma"
)

// SigmaOptions says which Sigma rules a load takes beyond those found in
// the rules dir.
type SigmaOptions struct {
	// Dirs are directories of Sigma rules (a clone of a team's Sigma
	// repository), read recursively. Files there that are not Sigma rules
	// are skipped, and a Sigma rule Outpost cannot run is reported in
	// Set.Rejected rather than failing the load: such a directory holds
	// rules for logs Outpost does not have.
	Dirs []string
	// Status lists the statuses taken (default stable and test).
	Status []string
	// MinLevel is the lowest level taken (default: every level).
	MinLevel string
	// Pipelines are added to the shipped ones.
	Pipelines []*sigma.Pipeline
}

// Rejected is a Sigma rule a load did not take, and why.
type Rejected struct {
	File   string
	Line   int
	ID     string
	Reason string
	// Skipped: left out by the status or level filter, not a problem.
	Skipped bool
}

func (r Rejected) String() string {
	return fmt.Sprintf("%s:%d: rule %q: %s", r.File, r.Line, r.ID, r.Reason)
}

// sigmaDoc is a Sigma rule document found while loading.
type sigmaDoc struct {
	file    string
	node    *yaml.Node
	lenient bool // from SigmaOptions.Dirs: a problem rejects the rule, not the set
}

// DefaultSigmaStatus is what is taken when SigmaOptions.Status is empty.
var DefaultSigmaStatus = []string{"stable", "test"}

// sigmaSeverity maps Sigma levels to CEF severity.
var sigmaSeverity = map[string]int{"informational": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}

var attackTag = regexp.MustCompile(`^attack\.t(\d{4})(\.\d{3})?$`)

// sigmaBase is a Sigma detection rule translated, which correlations may
// reference.
type sigmaBase struct {
	r    *Rule
	sr   *sigma.Rule
	plan *sigma.Plan
	file string
	// referenced: a correlation references it; generate: one of those
	// asks that it alert on its own too.
	referenced, generate bool
}

// sigmaRules turns the Sigma documents found into rules: the detection
// rules first, then the correlations over them. A detection rule that a
// correlation references (without generate: true) does not alert on its
// own.
func (l *loader) sigmaRules() {
	pipelines, err := sigma.Shipped()
	if err != nil {
		l.errs = append(l.errs, fmt.Sprintf("shipped Sigma pipelines: %v", err))
		return
	}
	pipelines = append(pipelines, l.sigma.Pipelines...)
	sigma.SortPipelines(pipelines)
	status := l.sigma.Status
	if len(status) == 0 {
		status = DefaultSigmaStatus
	}
	minLevel := slices.Index(sigma.Levels, l.sigma.MinLevel)
	var bases []*sigmaBase
	byRef := map[string]*sigmaBase{} // by id (lowercase) and by name
	notTaken := map[string]string{}  // id or name -> why it was not taken
	var correlations []sigmaDoc
	// The rules dir's documents first: a repository's copy of a curated
	// rule (same id) is the duplicate, not the curated one.
	docs := slices.Clone(l.sigmaDocs)
	slices.SortStableFunc(docs, func(a, b sigmaDoc) int {
		switch {
		case a.lenient == b.lenient:
			return 0
		case b.lenient:
			return -1
		}
		return 1
	})
	for _, d := range docs {
		line := d.node.Line
		id := scalar(valueOf(d.node, "id"))
		name := scalar(valueOf(d.node, "name"))
		reject := func(skipped bool, format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			for _, k := range []string{strings.ToLower(id), name} {
				if k != "" {
					notTaken[k] = msg
				}
			}
			l.sigmaReject(d, line, id, skipped, msg)
		}
		if sigma.IsCorrelation(d.node) {
			correlations = append(correlations, d)
			continue
		}
		sr, err := sigma.Parse(d.node)
		if err != nil {
			line = errLine(err, line)
			reject(false, "%v", err)
			continue
		}
		rid := sigmaID(sr)
		if id == "" {
			id = rid
		}
		if d.lenient {
			if why := sigmaFiltered(sr.Status, sr.Level, status, minLevel); why != "" {
				reject(true, "%s", why)
				continue
			}
		}
		r, plan, err := l.sigmaRule(d, sr, rid, pipelines)
		if err != nil {
			line = errLine(err, line)
			reject(false, "%v", err)
			continue
		}
		if prev, dup := l.seen[r.ID]; dup {
			reject(false, "id: duplicate id, first defined at %s", prev)
			continue
		}
		l.seen[r.ID] = fmt.Sprintf("%s:%d", d.file, d.node.Line)
		b := &sigmaBase{r: r, sr: sr, plan: plan, file: d.file}
		bases = append(bases, b)
		byRef[r.ID] = b
		if sr.ID != "" {
			byRef[strings.ToLower(sr.ID)] = b
		}
		if sr.Name != "" {
			byRef[sr.Name] = b
		}
	}
	// The correlations' own ids and names, to tell a chain (or a cycle) of
	// correlations from a reference to nothing.
	for _, d := range correlations {
		for _, k := range []string{"id", "name"} {
			v := scalar(valueOf(d.node, k))
			if k == "id" {
				v = strings.ToLower(v)
			}
			if _, known := byRef[v]; v != "" && !known {
				notTaken[v] = "it is a correlation, and a correlation of correlations is not supported yet"
			}
		}
	}
	var corrRules []*Rule
	for _, d := range correlations {
		line := d.node.Line
		id := scalar(valueOf(d.node, "id"))
		reject := func(skipped bool, format string, args ...any) {
			l.sigmaReject(d, line, id, skipped, fmt.Sprintf(format, args...))
		}
		c, err := sigma.ParseCorrelation(d.node)
		if err != nil {
			line = errLine(err, line)
			reject(false, "%v", err)
			continue
		}
		if d.lenient {
			if why := sigmaFiltered(c.Status, c.Level, status, minLevel); why != "" {
				reject(true, "%s", why)
				continue
			}
		}
		r, refs, err := l.sigmaCorrelation(d, c, byRef, notTaken)
		if err != nil {
			line = errLine(err, line)
			reject(false, "%v", err)
			continue
		}
		if id == "" {
			id = r.ID
		}
		if prev, dup := l.seen[r.ID]; dup {
			reject(false, "id: duplicate id, first defined at %s", prev)
			continue
		}
		l.seen[r.ID] = fmt.Sprintf("%s:%d", d.file, d.node.Line)
		// generate: false silences only the rules of the correlation's own
		// file (as the specification's v2.2 draft says): a correlation
		// elsewhere, in a repository say, cannot switch off a rule.
		for _, b := range refs {
			if b.file == d.file {
				b.referenced = true
				b.generate = b.generate || c.Generate
			}
		}
		corrRules = append(corrRules, r)
	}
	for _, b := range bases {
		if !b.referenced || b.generate {
			l.set.Rules = append(l.set.Rules, b.r)
			l.set.byID[b.r.ID] = b.r
		}
	}
	for _, r := range corrRules {
		l.set.Rules = append(l.set.Rules, r)
		l.set.byID[r.ID] = r
	}
}

// sigmaReject reports a Sigma document not taken: in a Sigma dir (or left
// out by a filter) as a rejected rule, in the rules dir as a load error.
func (l *loader) sigmaReject(d sigmaDoc, line int, id string, skipped bool, msg string) {
	if d.lenient || skipped {
		l.set.Rejected = append(l.set.Rejected, Rejected{File: d.file, Line: line, ID: id, Reason: msg, Skipped: skipped})
		return
	}
	l.errorf(d.file, line, id, "%s", msg)
}

// errLine is the line a *sigma.Error names, or line.
func errLine(err error, line int) int {
	var e *sigma.Error
	if errors.As(err, &e) && e.Line > 0 {
		return e.Line
	}
	return line
}

// sigmaFiltered says why the status and level filters leave a rule of a
// Sigma dir out, or "".
func sigmaFiltered(st, level string, status []string, minLevel int) string {
	if st == "" {
		st = "experimental"
	}
	if !slices.Contains(status, st) {
		return "status " + st + " is not taken (rules.sigma_status)"
	}
	if level == "" {
		level = "medium" // what a rule without level runs as (severity 5)
	}
	if minLevel > 0 && slices.Index(sigma.Levels, level) < minLevel {
		return "level " + level + " is below rules.sigma_min_level"
	}
	return ""
}

// sigmaCorrelation translates a correlation rule over the translated
// detection rules: event_count into a threshold rule, value_count into a
// distinct rule, temporal_ordered into a sequence, temporal into an
// unordered sequence, each over the referenced rules' conditions. It
// returns the rule and the detection rules it references.
func (l *loader) sigmaCorrelation(d sigmaDoc, c *sigma.Correlation, byRef map[string]*sigmaBase, notTaken map[string]string) (*Rule, []*sigmaBase, error) {
	id := strings.ToLower(c.ID)
	if !idPattern.MatchString(id) {
		id = sigmaID(&sigma.Rule{Title: c.Title})
	}
	var refs []*sigmaBase
	for _, ref := range c.Rules {
		b := byRef[ref]
		if b == nil {
			b = byRef[strings.ToLower(ref)]
		}
		if b == nil {
			if why, ok := notTaken[ref]; ok {
				return nil, nil, fmt.Errorf("correlation.rules: %s was not taken: %s", ref, why)
			}
			if why, ok := notTaken[strings.ToLower(ref)]; ok {
				return nil, nil, fmt.Errorf("correlation.rules: %s was not taken: %s", ref, why)
			}
			return nil, nil, fmt.Errorf("correlation.rules: no Sigma rule has the id or name %q", ref)
		}
		if b.r.Kind != KindMatch {
			return nil, nil, fmt.Errorf("correlation.rules: %s is an aggregation (| count()); a correlation takes detection rules", ref)
		}
		refs = append(refs, b)
	}
	w, err := sigmaDuration(c.Timespan)
	if err != nil {
		return nil, nil, fmt.Errorf("correlation.timespan: %v", err)
	}
	// The group-by fields in each referenced rule's events: an alias names
	// them per rule.
	by := make([][]string, len(refs))
	for i, b := range refs {
		for _, g := range c.GroupBy {
			field := g
			if alias, ok := c.Aliases[g]; ok {
				f, ok := alias[c.Rules[i]]
				if !ok && b.sr.Name != "" {
					f, ok = alias[b.sr.Name]
				}
				if !ok {
					return nil, nil, fmt.Errorf("correlation.aliases.%s: no field for rule %s", g, c.Rules[i])
				}
				field = f
			}
			f, err := sigmaField(b.plan, field, b.sr.Logsource)
			if err != nil {
				return nil, nil, fmt.Errorf("correlation.group-by: %v", err)
			}
			by[i] = append(by[i], f)
		}
	}
	r := &Rule{ID: id, Title: c.Title, Description: c.Description, Window: w, File: d.file, Line: d.node.Line, GroupBy: by[0]}
	r.Severity = 5
	if s, ok := sigmaSeverity[c.Level]; ok {
		r.Severity = s
	}
	for _, t := range c.Tags {
		if m := attackTag.FindStringSubmatch(strings.ToLower(t)); m != nil {
			r.Tags = append(r.Tags, "T"+m[1]+m[2])
		}
	}
	switch c.Type {
	case "event_count", "value_count":
		for i := range refs {
			if !slices.Equal(by[i], by[0]) {
				return nil, nil, fmt.Errorf("correlation.group-by: %v in %s but %v in %s; an %s needs the same fields in every rule", by[0], c.Rules[0], by[i], c.Rules[i], c.Type)
			}
		}
		if r.Threshold, r.AtMost, err = c.Bounds(); err != nil {
			return nil, nil, fmt.Errorf("correlation.%v", err)
		}
		r.Kind = KindThreshold
		if c.Type == "value_count" {
			r.Kind = KindDistinct
			for i, b := range refs {
				f, err := sigmaField(b.plan, c.Field, b.sr.Logsource)
				if err != nil {
					return nil, nil, fmt.Errorf("correlation.condition.field: %v", err)
				}
				if i == 0 {
					r.Field = f
				} else if f != r.Field {
					return nil, nil, fmt.Errorf("correlation.condition.field: %s in %s but %s in %s", r.Field, c.Rules[0], f, c.Rules[i])
				}
			}
			r.value, _ = lookupField(r.Field)
		}
		var conds []string
		for _, b := range refs {
			conds = append(conds, "("+b.r.Steps[0].Condition+")")
		}
		r.Steps = []*Step{{Name: "condition", Condition: strings.Join(conds, " or "), By: r.GroupBy, Count: 1}}
	case "temporal", "temporal_ordered":
		if len(refs) < 2 || len(refs) > MaxSteps {
			return nil, nil, fmt.Errorf("correlation.rules: %s needs at least two rules and at most %d, got %d", c.Type, MaxSteps, len(refs))
		}
		if n, ok := c.Condition["gte"]; len(c.Condition) > 0 && (!ok || len(c.Condition) > 1 || n != len(refs)) {
			return nil, nil, fmt.Errorf("correlation.condition: for %s only {gte: %d} (every rule) is supported", c.Type, len(refs))
		}
		r.Kind, r.Unordered = KindSequence, c.Type == "temporal"
		for i, b := range refs {
			r.Steps = append(r.Steps, &Step{Name: c.Rules[i], Condition: b.r.Steps[0].Condition, By: by[i], Count: 1})
		}
	default:
		return nil, nil, fmt.Errorf("correlation.type: %s is not supported yet", c.Type)
	}
	for _, f := range r.GroupBy {
		g, _ := lookupField(f)
		r.Fields, r.fields = append(r.Fields, f), append(r.fields, g)
	}
	var problems []string
	for _, st := range r.Steps {
		l.compileStep(r, st, func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) })
		l.keyGetters(st, func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) })
	}
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("the translated correlation does not compile: %s", strings.Join(problems, "; "))
	}
	// A change to the correlation or to a rule it references starts its
	// state afresh.
	h := sha256.New()
	b, _ := yaml.Marshal(d.node)
	h.Write(b)
	for _, ref := range refs {
		h.Write([]byte(ref.r.Fingerprint))
	}
	r.Fingerprint = hex.EncodeToString(h.Sum(nil)[:6])
	r.SigmaCorrelation = c
	return r, refs, nil
}

// sigmaID is the rule id a Sigma rule runs under: its id (a UUID), or
// when it has none, "sigma-" and a slug of its title.
func sigmaID(sr *sigma.Rule) string {
	if id := strings.ToLower(sr.ID); idPattern.MatchString(id) {
		return id
	}
	var b strings.Builder
	b.WriteString("sigma-")
	dash := false
	for _, c := range strings.ToLower(sr.Title) {
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') {
			b.WriteRune(c)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.TrimRight(b.String(), "-")
	return s[:min(len(s), 128)]
}

// sigmaRule translates one Sigma rule into a native one.
func (l *loader) sigmaRule(d sigmaDoc, sr *sigma.Rule, id string, pipelines []*sigma.Pipeline) (*Rule, *sigma.Plan, error) {
	plan := sigma.PlanFor(pipelines, sr.Logsource, strconv.Quote)
	switch {
	case plan.Failure != "":
		return nil, nil, fmt.Errorf("logsource %s: %s", sr.Logsource, plan.Failure)
	case plan.ItemFailure != "":
		return nil, nil, fmt.Errorf("logsource %s: %s", sr.Logsource, plan.ItemFailure)
	case plan.Route == "":
		return nil, nil, fmt.Errorf("logsource %s: no pipeline routes it to Outpost's events (see docs/sigma.md)", sr.Logsource)
	}
	field := func(name string) (string, error) {
		if plan.Drop[name] {
			return "", sigma.ErrDropped
		}
		f, err := sigmaField(plan, name, sr.Logsource)
		if err != nil {
			return "", err
		}
		return accessor(f), nil
	}
	tr, err := sr.Translate(field)
	if err != nil {
		return nil, nil, err
	}
	r := &Rule{
		ID: id, Title: sr.Title, Description: sr.Description, Kind: KindMatch,
		File: d.file, Line: d.node.Line,
	}
	r.Severity = 5
	if s, ok := sigmaSeverity[sr.Level]; ok {
		r.Severity = s
	}
	for _, t := range sr.Tags {
		if m := attackTag.FindStringSubmatch(strings.ToLower(t)); m != nil {
			r.Tags = append(r.Tags, "T"+m[1]+m[2])
		}
	}
	for _, f := range sr.Fields {
		if name, err := sigmaField(plan, f, sr.Logsource); err == nil && !slices.Contains(r.Fields, name) {
			r.Fields = append(r.Fields, name)
		}
	}
	for _, f := range r.Fields {
		g, _ := lookupField(f)
		r.fields = append(r.fields, g)
	}
	if a := tr.Aggregation; a != nil {
		if err := sigmaAggregation(r, sr, a, plan); err != nil {
			return nil, nil, err
		}
	}
	cond := "(" + plan.Route + ") and (" + tr.Condition + ")"
	r.Steps = []*Step{{Name: "condition", Condition: cond, By: r.GroupBy, Count: 1}}
	var problems []string
	l.compileStep(r, r.Steps[0], func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) })
	l.keyGetters(r.Steps[0], func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) })
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("the translated condition does not compile: %s", strings.Join(problems, "; "))
	}
	b, _ := yaml.Marshal(d.node)
	sum := sha256.Sum256(b)
	r.Fingerprint = hex.EncodeToString(sum[:6])
	r.Sigma = sr
	return r, plan, nil
}

// sigmaAggregation makes r the threshold or distinct rule an older
// `| count() by X > N` aggregation asks for.
func sigmaAggregation(r *Rule, sr *sigma.Rule, a *sigma.Aggregation, plan *sigma.Plan) error {
	if sr.Timeframe == "" {
		return fmt.Errorf("detection.condition: an aggregation needs timeframe")
	}
	w, err := sigmaDuration(sr.Timeframe)
	if err != nil {
		return fmt.Errorf("timeframe: %v", err)
	}
	r.Window = w
	ops := map[string]string{">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "==": "eq"}
	c := &sigma.Correlation{Condition: map[string]int{ops[a.Op]: a.N}}
	if r.Threshold, r.AtMost, err = c.Bounds(); err != nil {
		return fmt.Errorf("detection.%v", err)
	}
	r.Kind = KindThreshold
	if a.Field != "" {
		f, err := sigmaField(plan, a.Field, sr.Logsource)
		if err != nil {
			return fmt.Errorf("detection.condition: count(%s): %v", a.Field, err)
		}
		r.Kind, r.Field = KindDistinct, f
		r.value, _ = lookupField(f)
	}
	for _, g := range a.GroupBy {
		f, err := sigmaField(plan, g, sr.Logsource)
		if err != nil {
			return fmt.Errorf("detection.condition: by %s: %v", g, err)
		}
		r.GroupBy = append(r.GroupBy, f)
		// The alert carries what it is grouped by (a SIEM correlates on
		// src, suser, ...), as a native rule would list it in fields.
		if !slices.Contains(r.Fields, f) {
			g, _ := lookupField(f)
			r.Fields, r.fields = append(r.Fields, f), append(r.fields, g)
		}
	}
	return nil
}

// maxWindowDays bounds a Sigma timespan: window state is kept that long.
const maxWindowDays = 366

// sigmaDuration reads a Sigma time span: a number and s, m, h, d, w, M or
// y.
func sigmaDuration(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("%q: expected a number and a unit (s, m, h, d, w, M, y)", s)
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: expected a positive number and a unit (s, m, h, d, w, M, y)", s)
	}
	unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour,
		'w': 7 * 24 * time.Hour, 'M': 30 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}[s[len(s)-1]]
	if unit == 0 {
		return 0, fmt.Errorf("%q: unknown unit (expected s, m, h, d, w, M or y)", s)
	}
	if time.Duration(n) > maxWindowDays*24*time.Hour/unit { // without overflowing
		return 0, fmt.Errorf("%q: longer than %d days", s, maxWindowDays)
	}
	return time.Duration(n) * unit, nil
}

// sigmaField resolves a Sigma field name to an Outpost field name: the
// pipelines' mapping, or one of Outpost's own names (without regard to
// case), or attrs.<name> as written.
// recordFieldName is a field path a record_fields source can look up:
// dotted names of letters, digits, '_', '-', '@' and '$'.
var recordFieldName = regexp.MustCompile(`^[A-Za-z0-9_@$-]+(\.[A-Za-z0-9_@$-]+)*$`)

func sigmaField(plan *sigma.Plan, name string, ls sigma.Logsource) (string, error) {
	f, ok := plan.Fields[name]
	if !ok {
		f, ok = plan.Fields[strings.ToLower(name)]
	}
	if !ok {
		// The longest prefix a field_name_prefix_mapping names.
		best, found := "", false
		for p := range plan.Prefixes {
			if strings.HasPrefix(name, p) && (!found || len(p) > len(best)) {
				best, found = p, true
			}
		}
		if found {
			f, ok = plan.Prefixes[best]+name[len(best):], true
		}
	}
	if !ok {
		if _, own := fieldGetters[strings.ToLower(name)]; own {
			f, ok = strings.ToLower(name), true
		} else if event.IsSchemaField(strings.ToLower(name)) {
			f, ok = "attrs."+strings.ToLower(name), true
		} else if strings.HasPrefix(name, "attrs.") {
			f, ok = name, true
		} else if plan.Record && len(name) <= 256 && recordFieldName.MatchString(name) {
			// The source fills it on demand from the original record.
			f, ok = "attrs."+RecordPrefix+strings.ToLower(name), true
		}
	}
	if !ok {
		return "", fmt.Errorf("field %q: no pipeline maps it for logsource %s, and it is not an Outpost field (see docs/sigma.md)", name, ls)
	}
	if _, known := lookupField(f); !known {
		return "", fmt.Errorf("field %q: mapped to %q, which is not an Outpost field", name, f)
	}
	return f, nil
}

// accessor is the condition expression reading Outpost field f as a
// string.
func accessor(f string) string {
	if k, ok := strings.CutPrefix(f, "attrs."); ok {
		return "attrs[" + strconv.Quote(k) + "]"
	}
	switch f {
	case "src_port", "dst_port": // 0: no port, which null and exists see as absent
		return "(" + f + " == 0 ? \"\" : string(" + f + "))"
	case "facility", "severity":
		return "string(" + f + ")"
	}
	return f
}

func valueOf(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// ConvertSigma translates the Sigma rules of one file (name, data) and
// returns them as a native rule file: what `outpost rules convert` prints.
// Any problem is an error, as in the rules dir.
func ConvertSigma(name string, data []byte, pipelines []*sigma.Pipeline) ([]byte, error) {
	base := path.Base(name)
	if !strings.HasSuffix(base, ".yml") && !strings.HasSuffix(base, ".yaml") {
		base += ".yml"
	}
	set, err := load(fstest.MapFS{base: {Data: data}}, path.Dir(name), SigmaOptions{Pipelines: pipelines})
	if err != nil {
		return nil, err
	}
	type step struct {
		Name      string   `yaml:"name"`
		Condition string   `yaml:"condition"`
		By        []string `yaml:"by,omitempty,flow"`
	}
	type nativeRule struct {
		ID          string   `yaml:"id"`
		Title       string   `yaml:"title"`
		Description string   `yaml:"description,omitempty"`
		Kind        Kind     `yaml:"kind"`
		Severity    int      `yaml:"severity"`
		Tags        []string `yaml:"tags,omitempty,flow"`
		Condition   string   `yaml:"condition,omitempty"`
		GroupBy     []string `yaml:"group_by,omitempty,flow"`
		Threshold   int      `yaml:"threshold,omitempty"`
		Window      string   `yaml:"window,omitempty"`
		Field       string   `yaml:"field,omitempty"`
		Unordered   bool     `yaml:"unordered,omitempty"`
		Steps       []step   `yaml:"steps,omitempty"`
		Fields      []string `yaml:"fields,omitempty,flow"`
	}
	var out struct {
		Rules []nativeRule `yaml:"rules"`
	}
	for _, r := range set.Rules {
		if r.Sigma == nil && r.SigmaCorrelation == nil {
			continue
		}
		nr := nativeRule{ID: r.ID, Title: r.Title, Description: r.Description, Kind: r.Kind, Severity: r.Severity,
			Tags: r.Tags, GroupBy: r.GroupBy, Threshold: r.Threshold,
			Field: r.Field, Unordered: r.Unordered, Fields: r.Fields}
		if r.Kind == KindSequence {
			for _, st := range r.Steps {
				nr.Steps = append(nr.Steps, step{Name: st.Name, Condition: st.Condition, By: st.By})
			}
		} else {
			nr.Condition = r.Steps[0].Condition
		}
		if r.Window > 0 {
			nr.Window = r.Window.String()
		}
		out.Rules = append(out.Rules, nr)
	}
	if len(out.Rules) == 0 {
		return nil, fmt.Errorf("%s: no Sigma rule in the file", name)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Translated from the Sigma rules of %s by outpost rules convert.\n", name)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
