// Package receiver is a minimal syslog-over-TCP receiver that stands in for
// the on-prem SIEM in `outpost demo` and in tests. It accepts LF-framed and
// octet-counted messages (detected per frame, as the syslog source does) and
// keeps them in memory in arrival order.
package receiver

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
)

// Receiver collects syslog messages sent to it over TCP.
type Receiver struct {
	ln     net.Listener
	mu     sync.Mutex
	msgs   []string
	bytes  int
	notify chan struct{}
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Listen starts a receiver on addr, e.g. "127.0.0.1:0".
func Listen(addr string) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{ln: ln, notify: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the listening address.
func (r *Receiver) Addr() net.Addr { return r.ln.Addr() }

func (r *Receiver) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns[c] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c)
	}
}

func (r *Receiver) serve(c net.Conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		c.Close()
	}()
	f := syslog.NewFramer(c, 64<<10)
	for {
		msg, err := f.Next()
		var fe *syslog.FrameError
		if errors.As(err, &fe) {
			continue
		}
		if err != nil {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, string(msg))
		r.bytes += len(msg)
		close(r.notify)
		r.notify = make(chan struct{})
		r.mu.Unlock()
	}
}

// Messages returns a copy of what arrived so far.
func (r *Receiver) Messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// Wait blocks until at least n messages arrived or ctx ends, and returns
// what arrived.
func (r *Receiver) Wait(ctx context.Context, n int) ([]string, error) {
	for {
		r.mu.Lock()
		if len(r.msgs) >= n {
			out := append([]string(nil), r.msgs...)
			r.mu.Unlock()
			return out, nil
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return r.Messages(), ctx.Err()
		}
	}
}

// Close stops listening and drops open connections.
func (r *Receiver) Close() error {
	err := r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return err
}
