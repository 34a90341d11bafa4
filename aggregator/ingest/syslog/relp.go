package syslog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RELPListener is one entry of `ingest.syslog.relp`: a RELP receiver for
// rsyslog's omrelp (https://www.rsyslog.com/doc/relp.html). A message is
// acknowledged ("rsp 200 OK") only once it, or its dead letter, is in
// JetStream; what Outpost did not acknowledge stays with the sender, which
// sends it again on its next session.
type RELPListener struct {
	Listen string    `yaml:"listen"` // e.g. "0.0.0.0:2514"
	TLS    *TLSFiles `yaml:"tls"`    // set: RELP over TLS (omrelp tls="on")
}

// RELP framing: "TXNR SP COMMAND SP DATALEN [SP DATA] LF", TXNR and
// DATALEN at most 9 digits, COMMAND at most 32 letters.
const (
	relpMaxDigits  = 9
	relpMaxCommand = 32
	// relpBatch bounds the frames taken before their acks go out: what the
	// reader holds is answered after one flush of the sink.
	relpBatch = 1024
)

// KindRELPProtocol is a RELP session that broke the protocol (a bad
// frame, a message before "open"): the session is closed, and the sender
// sends again what was not acknowledged.
const KindRELPProtocol = "relp_protocol"

// RELPFrame is one RELP command or response.
type RELPFrame struct {
	Txnr    int
	Command string
	Data    []byte
	// Oversize is the length of the data when it was over the limit: Data
	// then holds only its first bytes, the rest was read and dropped.
	Oversize int
}

// errRELPFrame is a frame that breaks RELP's grammar.
var errRELPFrame = errors.New("not a RELP frame")

// ReadRELPFrame reads one frame from br. Data longer than maxData is read
// to its end but only its first 4 KiB kept, as a sample (Oversize says how
// long it was); data longer than hardMax is refused without reading it. An
// error wrapping errRELPFrame means the stream is not RELP; io.EOF before
// the frame's first byte means the peer ended the session cleanly.
func ReadRELPFrame(br *bufio.Reader, maxData, hardMax int) (RELPFrame, error) {
	var f RELPFrame
	txnr, sep, err := relpNumber(br)
	if err != nil {
		return f, err
	}
	if sep != ' ' {
		return f, fmt.Errorf("%w: no space after the transaction number", errRELPFrame)
	}
	f.Txnr = txnr
	var cmd [relpMaxCommand]byte
	n := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return f, noEOF(err)
		}
		if b == ' ' {
			break
		}
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z') || n == relpMaxCommand {
			return f, fmt.Errorf("%w: bad command", errRELPFrame)
		}
		cmd[n] = b
		n++
	}
	if n == 0 {
		return f, fmt.Errorf("%w: empty command", errRELPFrame)
	}
	f.Command = string(cmd[:n])
	size, sep, err := relpNumber(br)
	if err != nil {
		return f, noEOF(err)
	}
	switch {
	case sep == '\n' && size == 0:
		return f, nil
	case sep != ' ':
		return f, fmt.Errorf("%w: no space after the data length", errRELPFrame)
	case size > hardMax:
		return f, fmt.Errorf("%w: data length %d over the limit of %d", errRELPFrame, size, hardMax)
	}
	keep := size
	if size > maxData {
		// Too long: only a sample is kept for the dead letter, as TCP does.
		keep, f.Oversize = min(maxData, sampleSize), size
	}
	// Memory follows the bytes that arrive, not the length announced: a
	// header alone must not reserve max_message_size.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, br, int64(keep)); err != nil {
		return f, noEOF(err)
	}
	f.Data = buf.Bytes()
	if size > keep {
		if _, err := br.Discard(size - keep); err != nil {
			return f, noEOF(err)
		}
	}
	b, err := br.ReadByte()
	if err != nil {
		return f, noEOF(err)
	}
	if b != '\n' {
		return f, fmt.Errorf("%w: the frame does not end in LF", errRELPFrame)
	}
	return f, nil
}

// relpNumber reads 1 to 9 digits and the byte after them.
func relpNumber(br *bufio.Reader) (int, byte, error) {
	n, digits := 0, 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			if digits > 0 {
				err = noEOF(err)
			}
			return 0, 0, err
		}
		if b < '0' || b > '9' {
			if digits == 0 {
				return 0, 0, fmt.Errorf("%w: a number was expected", errRELPFrame)
			}
			return n, b, nil
		}
		if digits == relpMaxDigits {
			return 0, 0, fmt.Errorf("%w: a number of more than %d digits", errRELPFrame, relpMaxDigits)
		}
		n = n*10 + int(b-'0')
		digits++
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// relpReply is a response to send once the batch is safe.
type relpReply struct {
	txnr int
	text string
}

// serveRELP runs one RELP session: it reads what the sender has sent (up
// to relpBatch frames), publishes the messages, flushes the sink, and only
// then answers them "200 OK", in order. At shutdown or when the bus fails
// it answers nothing more and closes the session ("serverclose"): the
// sender keeps and resends what was not acknowledged.
func (r *run) serveRELP(entry *tableConn, conn net.Conn, transport string) {
	defer conn.Close()
	sender := connSender(conn)
	events := r.m.events[transport]
	rd := &relpReader{conn: conn, bytes: r.m.bytes[transport], entry: entry, idle: r.cfg.IdleTimeout}
	br := bufio.NewReaderSize(rd, 64<<10)
	bw := bufio.NewWriterSize(conn, 16<<10)
	p := r.newParser()
	flusher := r.sink.(Flusher) // checked in New
	maxData := int(r.cfg.MaxMessageSize)
	hardMax := MaxMaxMessageSize + 1024 // room for the open offers
	opened := false
	var replies []relpReply
	serverClose := func() {
		if entry != nil && entry.evicted.Load() {
			return
		}
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		bw.WriteString("0 serverclose 0\n")
		bw.Flush()
	}
	stop := context.AfterFunc(r.ctx, func() {
		rd.closing.Store(true)
		// Reads and writes: a peer that stopped reading our answers must
		// not hold shutdown.
		conn.SetDeadline(time.Unix(1, 0))
	})
	defer stop()

	for {
		replies = replies[:0]
		messages, closing := 0, false
		for len(replies) < relpBatch && !closing {
			rd.frameStart(r.cfg.FrameTimeout, br.Buffered() > 0)
			f, err := ReadRELPFrame(br, maxData, hardMax)
			if err != nil {
				switch {
				case r.ctx.Err() != nil || rd.closing.Load():
				case errors.Is(err, errRELPFrame):
					r.relpProblem(sender, err)
				case err == io.EOF:
				case entry != nil && entry.evicted.Load():
					r.m.evictedConns.Inc()
				case errors.Is(err, os.ErrDeadlineExceeded) && rd.inFrame:
					r.m.errors.WithLabelValues(errFrameTimeout).Inc()
					r.logProblem(errFrameTimeout, "RELP session closed: a frame took longer than frame_timeout to arrive",
						"sender", sender, "frame_timeout", r.cfg.FrameTimeout)
				case errors.Is(err, os.ErrDeadlineExceeded):
				default:
					r.m.errors.WithLabelValues(errRead).Inc()
					r.logProblem(errRead, "reading RELP session failed", "sender", sender, "err", err)
				}
				// What was read and not yet answered is answered if it
				// can be made safe: the sender need not send it again.
				if messages > 0 && r.failure() == nil && flusher.Flush(r.pubCtx) == nil {
					r.writeReplies(entry, conn, bw, replies)
				}
				if r.ctx.Err() != nil {
					serverClose()
				}
				return
			}
			if entry != nil {
				entry.active.Store(time.Now().UnixNano())
			}
			switch {
			case f.Command == "open" && !opened:
				if !strings.Contains(string(f.Data), "commands=") || !relpOffersSyslog(f.Data) {
					r.relpProblem(sender, fmt.Errorf("%w: the open command does not offer commands=syslog", errRELPFrame))
					conn.SetWriteDeadline(r.writeDeadline(entry))
					bw.WriteString(relpResponse(f.Txnr, "500 commands=syslog is required"))
					bw.Flush()
					return
				}
				opened = true
				replies = append(replies, relpReply{f.Txnr, "200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog"})
			case !opened:
				r.relpProblem(sender, fmt.Errorf("%w: %q before open", errRELPFrame, f.Command))
				return
			case f.Command == "syslog":
				received := time.Now()
				var err error
				if f.Oversize > 0 {
					err = r.reject(KindOversize, fmt.Sprintf("%s: RELP message of %d bytes exceeds max_message_size %d",
						KindOversize, f.Oversize, maxData), f.Data, sender)
				} else {
					err = r.deliver(p, f.Data, received, sender, events)
				}
				if err != nil {
					serverClose() // the sink failed: nothing more is acknowledged
					return
				}
				messages++
				replies = append(replies, relpReply{f.Txnr, "200 OK"})
			case f.Command == "close":
				closing = true
				replies = append(replies, relpReply{f.Txnr, ""})
			default:
				replies = append(replies, relpReply{f.Txnr, "500 command not supported"})
			}
			if br.Buffered() == 0 {
				break // answer what is in hand before waiting on the network
			}
		}
		if messages > 0 {
			if err := flusher.Flush(r.pubCtx); err != nil || r.failure() != nil {
				serverClose()
				return
			}
		}
		if !r.writeReplies(entry, conn, bw, replies) || closing {
			return
		}
	}
}

// relpReader is a RELP connection as the frame reader sees it: it counts
// bytes, closes a session idle for idle_timeout and a frame that takes
// longer than frame_timeout (slowloris), and fails at once at shutdown or
// when the connection is evicted.
type relpReader struct {
	conn    net.Conn
	bytes   prometheus.Counter
	entry   *tableConn
	idle    time.Duration
	frame   time.Duration // frame_timeout
	inFrame bool          // a frame has begun to arrive
	until   time.Time     // when the frame must be whole
	closing atomic.Bool
}

// frameStart is called before each frame is read; buffered says its first
// bytes are already in hand.
func (rd *relpReader) frameStart(frameTimeout time.Duration, buffered bool) {
	rd.frame, rd.inFrame = frameTimeout, buffered
	if buffered {
		rd.until = time.Now().Add(frameTimeout)
	}
}

func (rd *relpReader) Read(p []byte) (int, error) {
	now := time.Now()
	d := now.Add(rd.idle)
	if rd.inFrame && rd.frame > 0 && rd.until.Before(d) {
		d = rd.until
	}
	rd.conn.SetDeadline(d) // both ways: over TLS a Read may write (a KeyUpdate answer)
	// After the deadline, as connReader does: shutdown and eviction store
	// their flag before they set a deadline in the past.
	if rd.closing.Load() || rd.entry != nil && rd.entry.evicted.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := rd.conn.Read(p)
	rd.bytes.Add(float64(n))
	if n > 0 && !rd.inFrame {
		rd.inFrame, rd.until = true, time.Now().Add(rd.frame)
	}
	return n, err
}

// relpWriteTimeout bounds writing a batch's answers; at shutdown, a second.
const relpWriteTimeout = 30 * time.Second

// writeDeadline is when a write of answers must be done: soon, and sooner
// at shutdown; in the past once the connection was evicted.
func (r *run) writeDeadline(entry *tableConn) time.Time {
	switch {
	case entry != nil && entry.evicted.Load():
		return time.Unix(1, 0)
	case r.ctx.Err() != nil:
		return time.Now().Add(time.Second)
	}
	return time.Now().Add(min(r.cfg.IdleTimeout, relpWriteTimeout))
}

// writeReplies writes the responses; false if the connection failed.
func (r *run) writeReplies(entry *tableConn, conn net.Conn, bw *bufio.Writer, replies []relpReply) bool {
	conn.SetWriteDeadline(r.writeDeadline(entry))
	for _, rp := range replies {
		bw.WriteString(relpResponse(rp.txnr, rp.text))
	}
	return bw.Flush() == nil
}

func relpResponse(txnr int, text string) string {
	if text == "" {
		return strconv.Itoa(txnr) + " rsp 0\n"
	}
	return strconv.Itoa(txnr) + " rsp " + strconv.Itoa(len(text)) + " " + text + "\n"
}

// relpOffersSyslog says whether an open command's offers include the
// syslog command ("commands=syslog" or a list with it).
func relpOffersSyslog(data []byte) bool {
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "commands="); ok {
			for c := range strings.SplitSeq(v, ",") {
				if strings.TrimSpace(c) == "syslog" {
					return true
				}
			}
		}
	}
	return false
}

func (r *run) relpProblem(sender string, err error) {
	r.m.errors.WithLabelValues(KindRELPProtocol).Inc()
	r.logProblem(KindRELPProtocol, "RELP session closed: it broke the protocol", "sender", sender, "err", err)
}
