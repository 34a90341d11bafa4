package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob"
	"github.com/outpost-siem/outpost/rules"
)

// reloader swaps the rule set of the filter and the windows stages. A set
// that fails to load is rejected with every problem logged, and the running
// set stays. State of rules whose definition did not change is kept: the
// windows key their state by the rule's fingerprint.
type reloader struct {
	mu      sync.Mutex
	reloads *prometheus.CounterVec
	loaded  prometheus.Gauge
	// rejected counts the Sigma rules of rules.sigma the running set left
	// out for a problem (not those the status or level filter skipped).
	rejected prometheus.Gauge
}

func (p *Pipeline) registerReload() error {
	p.reload = &reloader{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_rules_reloads_total",
			Help: "Rule reloads, by result (ok, rejected).",
		}, []string{"result"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_rules_loaded",
			Help: "Enabled rules in the running set.",
		}),
		rejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_rules_sigma_rejected",
			Help: "Sigma rules of rules.sigma the running set left out because Outpost cannot run them (outpost rules lint --sigma lists why).",
		}),
	}
	p.reload.loaded.Set(float64(len(p.rules.Rules)))
	p.reload.rejected.Set(float64(countRejected(p.rules)))
	for _, c := range []prometheus.Collector{p.reload.reloads, p.reload.loaded, p.reload.rejected} {
		if err := p.reg.Register(c); err != nil {
			return fmt.Errorf("registering the reload metrics: %w", err)
		}
	}
	return nil
}

// ReloadRules loads the rules again (from rules.dir, or the shipped pack)
// and, if they load without a problem, makes them the running set.
func (p *Pipeline) ReloadRules() error {
	p.reload.mu.Lock()
	defer p.reload.mu.Unlock()
	set, err := loadRules(p.cfg.Rules)
	p.console.noteReload(err)
	if err != nil {
		p.reload.reloads.WithLabelValues("rejected").Inc()
		p.log.Error("rules reload rejected; the running rules stay", "err", err)
		return err
	}
	p.setRules(set)
	p.reload.reloads.WithLabelValues("ok").Inc()
	p.log.Info("rules reloaded", "rules", len(set.Rules), "sigma_rejected", countRejected(set))
	return nil
}

func (p *Pipeline) setRules(set *rules.Set) {
	p.rulesMu.Lock()
	p.rules = set
	p.rulesMu.Unlock()
	// Windows first: once the filter runs a new rule, its matches must find
	// the rule on the other side.
	p.windows.SetRules(set)
	p.syslog.SetAttributes(set.Attributes())
	if p.azure != nil {
		p.azure.SetRecordFields(azureblob.NewRecordFields(set.RecordFields()))
	}
	p.filter.SetRules(set)
	p.reload.loaded.Set(float64(len(set.Rules)))
	p.reload.rejected.Set(float64(countRejected(set)))
	for _, r := range set.Rejected {
		if !r.Skipped {
			p.log.Debug("Sigma rule left out", "rule", r.String())
		}
	}
}

// countRejected counts the Sigma rules left out for a problem.
func countRejected(set *rules.Set) int {
	n := 0
	for _, r := range set.Rejected {
		if !r.Skipped {
			n++
		}
	}
	return n
}

// openRulesWatch starts watching rules.dir and the Sigma dirs, with every
// directory under them (list files may sit in a subdirectory; Sigma
// repositories nest). It runs in Open, so a file changed as soon as Open
// returns is seen. nil when there is nothing to watch.
func (p *Pipeline) openRulesWatch() (*fsnotify.Watcher, error) {
	var dirs []string
	if p.cfg.Rules.Dir != "" {
		dirs = append(dirs, p.cfg.Rules.Dir)
	}
	dirs = append(dirs, p.cfg.Rules.Sigma...)
	if len(dirs) == 0 {
		return nil, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching the rules: %w", err)
	}
	for _, dir := range dirs {
		err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				err = w.Add(path)
			}
			return err
		})
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("watching the rules: %w", err)
		}
	}
	return w, nil
}

// watchRules reloads when a file in rules.dir or a Sigma dir changes,
// after the changes settle for a moment (editors and git write several
// times).
func (p *Pipeline) watchRules(ctx context.Context) error {
	w := p.rulesWatch
	if w == nil {
		<-ctx.Done()
		return nil
	}
	defer w.Close()
	const settle = 500 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("rules watcher closed")
			}
			if ev.Op&(fsnotify.Create) != 0 {
				if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
					_ = w.Add(ev.Name)
				}
			}
			timer.Reset(settle)
		case err := <-w.Errors:
			p.log.Warn("watching the rules dir", "err", err)
		case <-timer.C:
			_ = p.ReloadRules() // logged and counted there
		}
	}
}
