package wire

import (
	"errors"
	"testing"
	"time"
)

func TestTimesRoundTrip(t *testing.T) {
	for _, in := range []time.Time{
		{},
		time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -7*3600)),
		time.Date(1, 1, 1, 0, 0, 1, 0, time.FixedZone("", 5*3600+1800)),
	} {
		var r Reader
		r.Reset(AppendTime(nil, in), false)
		got := r.Time()
		if err := r.Done(); err != nil {
			t.Fatal(err)
		}
		_, wantOff := in.Zone()
		if _, off := got.Zone(); !got.Equal(in) || off != wantOff || got.IsZero() != in.IsZero() {
			t.Errorf("%v read back as %v", in, got)
		}
	}
}

// A count the rest of the record cannot hold fails before anything is
// allocated for it; a string longer than the record is cut short.
func TestCorruptLengths(t *testing.T) {
	r := NewReader(AppendUvarint(nil, 1<<40))
	if n := r.Count(1); n != 0 || !errors.Is(r.Err(), ErrCorrupt) {
		t.Errorf("count %d, err %v", n, r.Err())
	}
	r = NewReader(append(AppendUvarint(nil, 10), "abc"...))
	if s := r.String(); s != "" || !errors.Is(r.Err(), ErrShort) {
		t.Errorf("string %q, err %v", s, r.Err())
	}
	r = NewReader(AppendString(nil, "abc"))
	r.Skip()
	if r.Done() != nil || r.Rest() != nil {
		t.Errorf("skip: done %v rest %q", r.Done(), r.Rest())
	}
}

func TestSharedStrings(t *testing.T) {
	rec := AppendString(AppendString(nil, "host-1"), "sshd")
	var r Reader
	r.Reset(rec, true)
	a, b := r.String(), r.String()
	rec[1] = 'X' // the strings are a copy of the record, not the record
	if a != "host-1" || b != "sshd" || r.Done() != nil {
		t.Errorf("read %q %q (%v)", a, b, r.Done())
	}
}
