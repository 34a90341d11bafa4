// Package pipeline wires Outpost's stages into one appliance: syslog source
// → EVENTS → rule filter → MATCHES → windows → ALERTS → forwarder, on the
// bus (embedded NATS by default) and the Badger state, with the metrics and
// health endpoints. cmd/outpost and the end-to-end tests both run this.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"github.com/fsnotify/fsnotify"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/filter"
	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob"
	"github.com/outpost-siem/outpost/aggregator/ingest/instrument"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/aggregator/window"
	"github.com/outpost-siem/outpost/forwarder"
	"github.com/outpost-siem/outpost/rules"
)

// Pipeline is a running appliance: everything opened, ready to Run.
type Pipeline struct {
	cfg   *Config
	log   *slog.Logger
	reg   *prometheus.Registry
	bus   *bus.Bus
	db    *state.DB
	disk  *state.DiskGuard
	rules *rules.Set

	publisher *bus.Publisher
	syslog    *syslog.Source
	azure     *azureblob.Source // nil without ingest.azure_blob.accounts
	azureRun  *supervised       // runs azure: its failures never stop the rest
	filter    *filter.Stage
	windows   *window.Stage
	forwarder *forwarder.Forwarder
	http      *httpServer
	console   *consoleState
	version   string
	reload    *reloader
	// rulesWatch watches the rule dirs from Open on; watchRules reads it.
	rulesWatch *fsnotify.Watcher
	rulesMu    sync.Mutex              // guards rules across reloads
	sources    []*instrument.Component // the sources' received counters, for Status
}

// Open loads the rules, opens the state and the bus, and opens every
// listener, so a caller can read Addrs before Run. cfg must have been
// validated. On error everything opened so far is closed again and the
// error says what could not be opened (a second `outpost run` on the same
// data_dir or ports fails here, cleanly).
func Open(ctx context.Context, cfg *Config, version string, logger *slog.Logger) (*Pipeline, error) {
	p := &Pipeline{cfg: cfg, log: logger, reg: prometheus.NewRegistry(), console: newConsoleState(), version: version}
	if err := p.open(ctx, version); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *Pipeline) open(ctx context.Context, version string) (err error) {
	cfg, logger := p.cfg, p.log
	if p.rules, err = loadRules(cfg.Rules); err != nil {
		return err
	}
	if err = CheckDisk(cfg); err != nil {
		return err
	}
	if err = os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	if p.disk, err = state.NewDiskGuard(cfg.DataDir, cfg.Disk, logger, p.reg); err != nil {
		return err
	}
	if p.db, err = state.Open(filepath.Join(cfg.DataDir, "state"), cfg.State, logger); err != nil {
		return err
	}
	if p.bus, err = bus.Open(ctx, cfg.NATS, cfg.DataDir, logger); err != nil {
		return err
	}
	if err = p.bus.RegisterMetrics(p.reg); err != nil {
		return err
	}
	p.bus.SetGate(p.disk)
	if p.publisher, err = bus.NewPublisher(p.bus, bus.PublisherConfig{}, logger, p.reg); err != nil {
		return err
	}
	if p.syslog, err = syslog.New(cfg.Ingest.Syslog, trackedSink{p.publisher, p.console.hosts}, logger, p.reg); err != nil {
		return err
	}
	p.syslog.SetAttributes(p.rules.Attributes())
	if len(cfg.Ingest.AzureBlob.Accounts) > 0 {
		// It publishes with PublishEvents, not the publisher: it checkpoints
		// only after JetStream acked, which the publisher's queue hides.
		if p.azure, err = azureblob.New(cfg.Ingest.AzureBlob, trackedBatchSink{p.bus, p.console.hosts}, p.db, logger, p.reg); err != nil {
			return err
		}
		p.azure.SetRecordFields(azureblob.NewRecordFields(p.rules.RecordFields()))
		failures, err := newSourceFailures(p.reg)
		if err != nil {
			return err
		}
		p.azureRun = newSupervised(azureblob.SourceName, p.azure.Run, logger, failures)
	}
	if p.filter, err = filter.New(p.bus, p.rules, cfg.Windows.Lateness, logger, p.reg); err != nil {
		return err
	}
	if p.windows, err = window.New(cfg.Windows, p.bus, p.db, p.rules, logger, p.reg); err != nil {
		return err
	}
	if cfg.Windows.IsFused() {
		p.filter.Fuse(p.windows)
	}
	if err := p.registerReload(); err != nil {
		return err
	}
	if p.rulesWatch, err = p.openRulesWatch(); err != nil {
		return err
	}
	if p.forwarder, err = forwarder.New(cfg.Forwarder, version, p.bus, p.db, logger, p.reg); err != nil {
		return err
	}
	p.sources = append(p.sources, p.syslog.Metrics())
	if p.azure != nil {
		p.sources = append(p.sources, p.azure.Metrics())
	}
	if err := p.registerLinkRatio(); err != nil {
		return err
	}
	if cfg.HTTP.Listen != "off" {
		if p.http, err = p.listenHTTP(); err != nil {
			return err
		}
	}
	// Last: if a syslog socket cannot be opened, Listen closes the others,
	// and close() the rest.
	return p.syslog.Listen()
}

func loadRules(cfg RulesConfig) (*rules.Set, error) {
	o, err := cfg.SigmaOptions()
	if err != nil {
		return nil, err
	}
	return rules.Load(cfg.Dir, o)
}

// SyslogAddrs returns the syslog listeners' addresses.
func (p *Pipeline) SyslogAddrs() (udp, tcp []net.Addr) { return p.syslog.Addrs() }

// SyslogListenAddrs returns the addresses of the syslog stream listeners
// of one transport: "tcp", "tls" or "relp".
func (p *Pipeline) SyslogListenAddrs(transport string) []net.Addr {
	return p.syslog.ListenAddrs(transport)
}

// Reload is SIGHUP's: it reloads the rules and the syslog TLS listeners'
// certificates. Each is logged and counted; the first error is returned,
// and what failed keeps running as it was.
func (p *Pipeline) Reload() error {
	return errors.Join(p.ReloadRules(), p.syslog.ReloadTLS())
}

// HTTPAddr returns the metrics endpoint's address, or nil when off.
func (p *Pipeline) HTTPAddr() net.Addr {
	if p.http == nil {
		return nil
	}
	return p.http.addr()
}

// Rules returns the running rule set.
func (p *Pipeline) Rules() *rules.Set {
	p.rulesMu.Lock()
	defer p.rulesMu.Unlock()
	return p.rules
}

// Registry returns the metrics registry.
func (p *Pipeline) Registry() *prometheus.Registry { return p.reg }

// ready returns why the pipeline cannot make progress, or nil; degraded
// lists what runs impaired while the rest makes progress (a source that
// cannot run and is being retried). /readyz fails only for the first: a
// failing Azure account must not take the syslog listeners out of a load
// balancer.
func (p *Pipeline) ready() (err error, degraded []error) {
	return errors.Join(p.blocking()...), p.degraded()
}

// problems lists everything Status reports: what stops progress, then what
// runs degraded.
func (p *Pipeline) problems() []error {
	return append(p.blocking(), p.degraded()...)
}

// blocking lists what keeps the whole pipeline from making progress now.
func (p *Pipeline) blocking() []error {
	var errs []error
	if p.bus == nil || !p.bus.Conn().IsConnected() {
		errs = append(errs, errors.New("not connected to NATS"))
	}
	if err := p.disk.Check(); err != nil {
		errs = append(errs, err)
	}
	if p.bus != nil {
		if err := p.bus.Check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// degraded lists the parts that cannot run while the others do.
func (p *Pipeline) degraded() []error {
	if err := p.azureRun.Problem(); err != nil {
		return []error{err}
	}
	return nil
}

// Run runs every stage until ctx ends, then stops them in order: the
// sources first, then the publisher drains what they queued, then the rule
// filter, the windows and the forwarder; last the bus and the state are
// closed (Badger flushed, the embedded server shut down). Run returns the
// first stage error, or nil after a clean stop.
func (p *Pipeline) Run(ctx context.Context) error {
	defer p.close()
	type stage struct {
		name string
		run  func(context.Context) error
		stop func(cancel context.CancelFunc) // default: cancel
	}
	drainPublisher := func(cancel context.CancelFunc) {
		p.publisher.Close()
		// If JetStream is unreachable the drain would never end.
		time.AfterFunc(drainTimeout, cancel)
	}
	sources := []stage{{name: "syslog", run: p.syslog.Run}}
	if p.azure != nil {
		sources = append(sources, stage{name: "azure_blob", run: p.azureRun.Run})
	}
	layers := [][]stage{
		sources,
		{{name: "publisher", run: p.publisher.Run, stop: drainPublisher}},
		{{name: "filter", run: p.filter.Run}},
		{{name: "windows", run: p.windows.Run}},
		{{name: "forwarder", run: p.forwarder.Run}},
		{{name: "state-gc", run: p.db.RunGC}, {name: "rules-watch", run: p.watchRules}, {name: "disk-watch", run: p.disk.Run}, {name: "nats-watch", run: p.bus.Watch},
			{name: "console", run: p.runConsole}},
	}
	if p.http != nil {
		layers[len(layers)-1] = append(layers[len(layers)-1], stage{name: "http", run: p.http.run})
	}
	errc := make(chan error, 16)
	type running struct {
		cancel context.CancelFunc
		stops  []func(context.CancelFunc)
		wg     sync.WaitGroup
	}
	all := make([]*running, len(layers))
	for i, l := range layers {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &running{cancel: cancel}
		all[i] = r
		for _, st := range l {
			r.stops = append(r.stops, st.stop)
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				if err := st.run(lctx); err != nil {
					errc <- fmt.Errorf("%s: %w", st.name, err)
				}
			}()
		}
	}
	p.log.Info("outpost running", "rules", len(p.Rules().Rules), "data_dir", p.cfg.DataDir)
	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		p.log.Error("stage failed; stopping", "err", first)
	}
	for _, r := range all {
		stopped := false
		for _, stop := range r.stops {
			if stop != nil {
				stop(r.cancel)
				stopped = true
			}
		}
		if !stopped {
			r.cancel()
		}
		r.wg.Wait()
		r.cancel()
	}
	if first == nil {
		select {
		case first = <-errc:
		default:
		}
	}
	p.log.Info("outpost stopped")
	return first
}

// drainTimeout bounds how long a stop waits for queued events to reach
// JetStream.
const drainTimeout = 15 * time.Second

func (p *Pipeline) close() {
	if p.http != nil {
		p.http.close()
	}
	if p.rulesWatch != nil {
		p.rulesWatch.Close() // a second Close (watchRules') does nothing
		p.rulesWatch = nil
	}
	if p.bus != nil {
		p.bus.Close()
		p.bus = nil
	}
	if p.db != nil {
		if err := p.db.Close(); err != nil {
			p.log.Error("closing state", "err", err)
		}
		p.db = nil
	}
}

// CheckRules loads the rules cfg points to and returns how many are
// enabled; it opens nothing else.
func CheckRules(cfg *Config) (int, error) {
	set, err := loadRules(cfg.Rules)
	if err != nil {
		return 0, err
	}
	return len(set.Rules), nil
}
