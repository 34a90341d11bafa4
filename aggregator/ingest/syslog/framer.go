package syslog

import (
	"bufio"
	"fmt"
	"io"
	"slices"
)

// Kinds of FrameError. They double as error_type label values.
const (
	KindOversize  = "oversize"   // a frame longer than the size limit; skipped
	KindBadLength = "bad_length" // an octet count that is not 1 to 8 digits, not 0, then SP
	KindTruncated = "truncated"  // the stream ended inside an octet-counted frame
	// KindRELP is a stream that starts with a RELP open command: a RELP
	// sender (rsyslog omrelp) on a plain syslog port. The stream is over.
	KindRELP = "relp"
)

const (
	// maxLenDigits bounds an octet count: 8 digits already exceed the
	// largest MaxMessageSize, so a 9th digit is garbage, not a size.
	maxLenDigits = 8
	// sampleSize caps the bytes of a bad frame kept for the dead letter.
	sampleSize = 4 << 10
	// readerSize caps the bufio buffer per connection; longer LF frames are
	// assembled in Framer.buf.
	readerSize = 64 << 10
	// retainedBuffer is the most Framer.buf keeps between frames, so one
	// large frame does not pin MaxMessageSize per idle connection.
	retainedBuffer = 64 << 10
)

// FrameError reports a frame the Framer could not deliver. The Framer has
// already skipped past it and, unless the stream ended, the next call to
// Next reads the frame after it.
type FrameError struct {
	Kind string // KindOversize, KindBadLength or KindTruncated
	Len  int    // the declared octet count, when there was one
	Max  int    // the size limit
	// Sample holds the first bytes of the bad frame (at most 4 KiB and at
	// most Max), for the dead letter. It is valid until the next call to
	// Next.
	Sample []byte
}

func (e *FrameError) Error() string {
	switch e.Kind {
	case KindOversize:
		if e.Len > 0 {
			return fmt.Sprintf("%s: frame of %d bytes declared, the limit is %d", e.Kind, e.Len, e.Max)
		}
		return fmt.Sprintf("%s: no LF within the limit of %d bytes", e.Kind, e.Max)
	case KindBadLength:
		return e.Kind + ": expected an octet count of 1 to 8 digits, not all zero, then a space"
	case KindRELP:
		return e.Kind + ": the stream starts with a RELP open command, not syslog"
	case KindTruncated:
		if e.Len > 0 {
			return fmt.Sprintf("%s: the stream ended inside a frame of %d bytes", e.Kind, e.Len)
		}
		return e.Kind + ": the stream ended inside an octet count"
	}
	return e.Kind
}

// Framer splits one TCP stream into syslog messages.
//
// Framing is detected per frame from its first byte, as rsyslog's imtcp
// does, so one connection may mix both:
//
//   - a digit starts an RFC 6587 §3.4.1 octet-counted frame, "LEN SP MSG";
//   - anything else (normally '<') starts an RFC 6587 §3.4.2 frame that ends
//     at LF; one trailing CR is stripped, empty frames are skipped.
//
// A Framer never allocates a frame's declared size before checking it
// against the limit, and reuses its buffers: a frame Next returns is valid
// until the next call to Next.
type Framer struct {
	r         *bufio.Reader
	max       int
	sampleMax int
	buf       []byte // the frame being assembled, or the sample of a bad one
	err       error  // sticky: once the stream is done, every call returns it
	started   bool   // the start of the stream was checked for RELP
	// inFrame is true while Next reads inside a frame, false while it
	// waits for a frame to start; results counts what Next returned. The
	// reader reads them during its reads, for frame deadlines.
	inFrame bool
	results uint64
}

// NewFramer returns a Framer that reads r and delivers frames of at most
// maxSize bytes.
func NewFramer(r io.Reader, maxSize int) *Framer {
	maxSize = max(maxSize, 1)
	// +2 lets an LF frame of maxSize bytes plus CR LF sit in the buffer
	// whole, so ReadSlice hands it over without copying.
	return &Framer{
		r:         bufio.NewReaderSize(r, min(maxSize+2, readerSize)),
		max:       maxSize,
		sampleMax: min(maxSize, sampleSize),
	}
}

// Buffered returns how many bytes were read from the stream and not yet
// framed: 0 means the next Next will read.
func (f *Framer) Buffered() int { return f.r.Buffered() }

// Next returns the next message. A bad frame gives a *FrameError and the
// Framer stays usable; io.EOF means the stream ended cleanly between frames
// (an unterminated last LF frame is still delivered, as rsyslog does); any
// other error is the reader's, and final.
//
// A stream that starts with a RELP open command ("1 open 85 relp_version=…",
// RFC-less librelp framing that would otherwise pass for an octet-counted
// frame and a few LF frames) gives one FrameError of KindRELP, then io.EOF.
func (f *Framer) Next() ([]byte, error) {
	if cap(f.buf) > retainedBuffer {
		f.buf = nil
	}
	f.results++
	defer func() { f.inFrame = false }()
	if !f.started {
		f.started = true
		if n := f.relpOpen(); n > 0 {
			f.err = io.EOF
			b, _ := f.r.Peek(n)
			f.buf = append(f.buf[:0], b...)
			return nil, f.frameError(KindRELP, 0)
		}
	}
	for f.err == nil {
		f.inFrame = false
		first, err := f.r.Peek(1)
		if err != nil {
			f.err = err
			break
		}
		f.inFrame = true
		var frame []byte
		if '0' <= first[0] && first[0] <= '9' {
			frame, err = f.octetCounted()
		} else {
			frame, err = f.lineFramed()
		}
		if err != nil || frame != nil {
			return frame, err
		}
		// An empty LF frame: it consumed at least its LF, so this loop
		// advances every round.
	}
	return nil, f.err
}

// relpOpen returns the length of "TXNR SP open SP" if the stream starts
// with it (TXNR being 1 to 9 digits: a RELP session's first command), else
// 0. It peeks one byte more only while what it saw could still be that, so
// it never waits for input a syslog sender would not send.
func (f *Framer) relpOpen() int {
	const cmd = " open "
	digits := 0
	for i := 0; ; i++ {
		f.inFrame = i > 0 // the first byte may be long in coming; the rest not
		b, err := f.r.Peek(i + 1)
		if err != nil {
			return 0 // the stream ended or failed; Next reports it
		}
		c := b[i]
		switch {
		case i == digits && digits < 9 && isDigit(c):
			digits++
		case digits == 0 || c != cmd[i-digits]:
			return 0
		case i-digits == len(cmd)-1:
			return i + 1
		}
	}
}

// octetCounted reads "LEN SP MSG".
func (f *Framer) octetCounted() ([]byte, error) {
	f.buf = f.buf[:0]
	n := 0
	for {
		c, err := f.r.ReadByte()
		if err != nil {
			return nil, f.endInFrame(err, 0)
		}
		f.buf = append(f.buf, c)
		if c == ' ' {
			break
		}
		if c < '0' || c > '9' || len(f.buf) > maxLenDigits {
			// Resync: whatever this was, it is no frame we can measure, so
			// drop it up to the next LF and look for a frame after that,
			// as if it had been an LF frame. If the offending byte is the
			// LF itself, the line is already over and nothing is skipped:
			// skipping would eat the next, possibly good, frame.
			if c != '\n' {
				f.discardLine()
			}
			return nil, f.frameError(KindBadLength, 0)
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 {
		f.discardLine()
		return nil, f.frameError(KindBadLength, 0)
	}

	if n > f.max {
		// Skip exactly n bytes: the frame boundary is known, so the next
		// frame is intact. Keep the first bytes as the sample; Discard
		// allocates nothing whatever n is.
		k := min(n, f.sampleMax)
		f.buf = slices.Grow(f.buf[:0], k)[:k]
		if got, err := io.ReadFull(f.r, f.buf); err != nil {
			f.buf = f.buf[:got]
			f.stop(err)
		} else if _, err := f.r.Discard(n - k); err != nil {
			f.stop(err)
		}
		return nil, f.frameError(KindOversize, n)
	}

	f.buf = slices.Grow(f.buf[:0], n)[:n]
	if got, err := io.ReadFull(f.r, f.buf); err != nil {
		f.buf = f.buf[:got]
		return nil, f.endInFrame(err, n)
	}
	return f.buf, nil
}

// lineFramed reads up to and including LF and returns the line without LF
// and without one trailing CR, or nil for an empty line.
func (f *Framer) lineFramed() ([]byte, error) {
	f.buf = f.buf[:0]
	for {
		chunk, err := f.r.ReadSlice('\n')
		switch err {
		case nil:
			line := chunk
			if len(f.buf) > 0 {
				f.buf = append(f.buf, chunk...)
				line = f.buf
			}
			return f.finishLine(line[:len(line)-1])
		case bufio.ErrBufferFull:
			// No LF in a full buffer. More than max+1 bytes (a CR may
			// follow a message of exactly max) cannot become a valid
			// frame: drop through the next LF and go on from there.
			if len(f.buf)+len(chunk) > f.max+1 {
				f.keepSample(chunk)
				f.discardLine()
				return nil, f.frameError(KindOversize, 0)
			}
			f.buf = append(f.buf, chunk...)
		default:
			f.err = err
			if err != io.EOF {
				return nil, err
			}
			// The sender closed without a final LF. rsyslog submits such a
			// frame (a missing LF at the end is common), so do we.
			line := chunk
			if len(f.buf) > 0 {
				f.buf = append(f.buf, chunk...)
				line = f.buf
			}
			return f.finishLine(line)
		}
	}
}

func (f *Framer) finishLine(line []byte) ([]byte, error) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > f.max {
		// line may be the bufio buffer itself: point the sample at it,
		// never f.buf, which the next frame writes into.
		return nil, &FrameError{Kind: KindOversize, Max: f.max, Sample: line[:f.sampleMax]}
	}
	if len(line) == 0 {
		return nil, nil
	}
	return line, nil
}

// discardLine skips input through the next LF, keeping the start of it in
// the sample. If the stream ends first, the error is kept for the next call
// to Next, so the caller still gets the FrameError for this frame first.
func (f *Framer) discardLine() {
	for {
		chunk, err := f.r.ReadSlice('\n')
		f.keepSample(chunk)
		switch err {
		case nil:
			return
		case bufio.ErrBufferFull:
			continue
		default:
			f.stop(err)
			return
		}
	}
}

func (f *Framer) keepSample(p []byte) {
	if room := f.sampleMax - len(f.buf); room > 0 {
		f.buf = append(f.buf, p[:min(room, len(p))]...)
	}
}

// endInFrame handles a read error inside an octet-counted frame whose
// declared length is n (0 while still reading the count).
func (f *Framer) endInFrame(err error, n int) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		f.err = io.EOF
		return f.frameError(KindTruncated, n)
	}
	f.err = err
	return err
}

// stop records why the stream is over: io.EOF for any end of input.
func (f *Framer) stop(err error) {
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	f.err = err
}

func (f *Framer) frameError(kind string, n int) *FrameError {
	return &FrameError{Kind: kind, Len: n, Max: f.max, Sample: f.buf[:min(len(f.buf), f.sampleMax)]}
}
