package syslog

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// frames runs a Framer over r to the end and renders what it returned:
// "f:<frame>" for a frame, "e:<kind>" for a FrameError, and a last entry
// "EOF" or "err:<error>". It stops after limit results.
func frames(t testing.TB, r io.Reader, maxSize, limit int) []string {
	t.Helper()
	f := NewFramer(r, maxSize)
	var out []string
	for range limit {
		b, err := f.Next()
		var fe *FrameError
		switch {
		case err == nil:
			if len(b) > maxSize {
				t.Fatalf("frame of %d bytes exceeds the limit of %d", len(b), maxSize)
			}
			if len(b) == 0 {
				t.Fatal("empty frame")
			}
			out = append(out, "f:"+string(b))
		case errors.As(err, &fe):
			if len(fe.Sample) > maxSize || len(fe.Sample) > sampleSize {
				t.Fatalf("sample of %d bytes", len(fe.Sample))
			}
			out = append(out, "e:"+fe.Kind)
		case err == io.EOF:
			return append(out, "EOF")
		default:
			return append(out, "err:"+err.Error())
		}
	}
	t.Fatalf("no end after %d results: %q", limit, out)
	return nil
}

func TestFramer(t *testing.T) {
	big := strings.Repeat("x", 150<<10)
	fits := strings.Repeat("y", 90<<10)
	tests := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"octet-counted", "5 hello6 world!", 10, []string{"f:hello", "f:world!", "EOF"}},
		{"octet-counted with LF inside", "10 <1>a\nb\r\nc 3 <2>", 20, []string{"f:<1>a\nb\r\nc ", "f:<2>", "EOF"}},
		{"octet-counted leading zeros", "005 hello", 10, []string{"f:hello", "EOF"}},
		{"RELP open at the start", "1 open 85 relp_version=0\ncommands=syslog\n", 100, []string{"e:relp", "EOF"}},
		{"RELP-like but a message", "5 opens<1>x\n", 100, []string{"f:opens", "f:<1>x", "EOF"}},
		{"only the start is checked", "3 <1>1 open 5 hello", 100, []string{"f:<1>", "f:o", "f:pen 5 hello", "EOF"}},
		{"LF", "<1>a\n<2>b\n", 10, []string{"f:<1>a", "f:<2>b", "EOF"}},
		{"CRLF", "<1>a\r\n<2>b\r\n", 10, []string{"f:<1>a", "f:<2>b", "EOF"}},
		{"only one CR is stripped", "<1>a\r\r\n", 10, []string{"f:<1>a\r", "EOF"}},
		{"mixed on one stream", "5 hello<1>b\n6 world!<2>c\r\n", 10, []string{"f:hello", "f:<1>b", "f:world!", "f:<2>c", "EOF"}},
		{"LF after octet frame is an empty frame", "5 hello\n5 world\n", 10, []string{"f:hello", "f:world", "EOF"}},
		{"empty LF frames are skipped", "\n\r\n<1>a\n\n\n", 10, []string{"f:<1>a", "EOF"}},
		{"empty input", "", 10, []string{"EOF"}},
		{"unterminated last LF frame is delivered", "<1>a\n<2>b", 10, []string{"f:<1>a", "f:<2>b", "EOF"}},
		{"unterminated CR only", "<1>a\n\r", 10, []string{"f:<1>a", "EOF"}},

		{"LEN exactly at max", "10 0123456789<1>next\n", 10, []string{"f:0123456789", "f:<1>next", "EOF"}},
		{"LF frame exactly at max", "<1>4567890\n<1>4567890\r\n", 10, []string{"f:<1>4567890", "f:<1>4567890", "EOF"}},
		{"octet oversize then good", "11 01234567890<1>ok\n", 10, []string{"e:oversize", "f:<1>ok", "EOF"}},
		{"octet oversize, good octet frame after", "20 abcdefghijklmnopqrst2 ok", 10, []string{"e:oversize", "f:ok", "EOF"}},
		{"LF oversize then good", "<1>0123456789ABC\n<1>ok\n", 10, []string{"e:oversize", "f:<1>ok", "EOF"}},
		{"LF oversize by one", "<1>45678901\n<1>ok\n", 10, []string{"e:oversize", "f:<1>ok", "EOF"}},
		{"LF oversize longer than the reader buffer", "<1>" + strings.Repeat("z", 100) + "\n<1>ok\n", 20, []string{"e:oversize", "f:<1>ok", "EOF"}},
		{"LF frames assembled beyond the reader buffer", "<1>" + fits + "\n<1>" + big + "\r\n<1>ok\n", 100 << 10,
			[]string{"f:<1>" + fits, "e:oversize", "f:<1>ok", "EOF"}},

		{"bad length: letter", "12x garbage\n<1>ok\n", 10, []string{"e:bad_length", "f:<1>ok", "EOF"}},
		{"bad length: nine digits", "123456789 toolong\n<1>ok\n", 10, []string{"e:bad_length", "f:<1>ok", "EOF"}},
		{"bad length: zero", "0 \n<1>ok\n", 10, []string{"e:bad_length", "f:<1>ok", "EOF"}},
		{"bad length: 00", "00 x\n5 hello", 10, []string{"e:bad_length", "f:hello", "EOF"}},
		{"bad length ending in LF does not eat the next line", "12\n<1>ok\n", 10, []string{"e:bad_length", "f:<1>ok", "EOF"}},
		{"bad length: digits are a date", "2024-10-11 message\n<1>ok\n", 100, []string{"e:bad_length", "f:<1>ok", "EOF"}},
		{"bad length then EOF", "12x garbage", 10, []string{"e:bad_length", "EOF"}},

		{"EOF inside the payload", "10 01234", 10, []string{"e:truncated", "EOF"}},
		{"EOF inside the count", "12", 10, []string{"e:truncated", "EOF"}},
		{"EOF after the count", "5 ", 10, []string{"e:truncated", "EOF"}},
		{"EOF inside an oversize frame", "100 abc", 10, []string{"e:oversize", "EOF"}},
		{"EOF inside an oversize LF frame", "<1>0123456789ABC", 10, []string{"e:oversize", "EOF"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := frames(t, strings.NewReader(tt.in), tt.max, 100)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %.200q\nwant %.200q", got, tt.want)
			}
			// TCP delivers in arbitrary pieces: one byte at a time must
			// give the same frames.
			got = frames(t, iotest.OneByteReader(strings.NewReader(tt.in)), tt.max, 100)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("one byte at a time:\ngot  %.200q\nwant %.200q", got, tt.want)
			}
		})
	}
}

func TestFramerSamples(t *testing.T) {
	tests := []struct {
		name, in, sample string
		max              int
	}{
		{"octet oversize keeps the start", "20 abcdefghijklmnopqrst", "abcdefghij", 10},
		{"LF oversize keeps the start", "<1>0123456789ABC\n", "<1>0123456", 10},
		{"bad length keeps the line", "12x garbage\n", "12x garbage\n", 20},
		{"truncated keeps what came", "10 01234", "01234", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewFramer(strings.NewReader(tt.in), tt.max).Next()
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("Next() error = %v, want a *FrameError", err)
			}
			if string(fe.Sample) != tt.sample {
				t.Errorf("Sample = %q, want %q", fe.Sample, tt.sample)
			}
			if !strings.HasPrefix(fe.Error(), fe.Kind+": ") {
				t.Errorf("Error() = %q does not start with the kind", fe.Error())
			}
		})
	}
}

func TestFramerReadError(t *testing.T) {
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("<1>a\n<2>partial"), iotest.ErrReader(boom))
	f := NewFramer(r, 100)
	if b, err := f.Next(); err != nil || string(b) != "<1>a" {
		t.Fatalf("Next() = %q, %v", b, err)
	}
	for range 2 { // the error sticks
		if _, err := f.Next(); !errors.Is(err, boom) {
			t.Fatalf("Next() error = %v, want %v", err, boom)
		}
	}
}
