package bus

import (
	"strconv"
	"strings"
)

// HeaderSource, on a MATCHES message, says which EVENTS messages its
// matches come from: "FROM D1:N1 D2:N2 ...", decimal. The matches are in
// runs, each of one EVENTS message (or one chunk of its matches for this
// partition, at most 64 KiB: aggregator/filter), in order: run i has N_i
// matches and position P_i = P_(i-1) + D_i, P_0 = FROM (SourcePosition:
// the EVENTS stream sequence times 2^16 plus the chunk). The same EVENTS
// message evaluated again, after the rule filter crashed before acking
// it, gives the same runs at the same positions however it is batched,
// and the windows skip the runs they hold. FROM through the last run's
// position are the positions the message accounts for on its partition:
// those between its runs, and since the rule filter's previous message to
// the partition, gave it nothing. A message without it (an older version,
// or an EVENTS message without metadata) is applied as it comes.
const HeaderSource = "Outpost-Source"

// SourcePosition is HeaderSource's position of the chunk-th run of
// partition from the EVENTS message at seq; ok is false past 2^16 runs or
// an EVENTS sequence of 2^48 and more.
func SourcePosition(seq uint64, chunk int) (pos uint64, ok bool) {
	if seq == 0 || seq >= 1<<48 || chunk < 0 || chunk >= 1<<16 {
		return 0, false
	}
	return seq<<16 | uint64(chunk), true
}

// MaxRunBytes bounds a run of HeaderSource: the encoded matches (each
// with bus.AppendRecord's most overhead, binary.MaxVarintLen64) one
// EVENTS message gives one partition in one chunk. The rule filter cuts
// its runs so (filter/source.go), and the windows stage, handed fused the
// matches of an EVENTS message an unfused run published, places each in
// its chunk by the same sizes.
const MaxRunBytes = 64 << 10

// SourceRun is a run of HeaderSource: N matches from the EVENTS message
// (chunk) at Pos.
type SourceRun struct {
	Pos uint64
	N   int
}

// Source is where a batch's matches come from: runs of them in order,
// and the positions From through the last run's they account for.
type Source struct {
	From uint64
	Runs []SourceRun
}

// Format is s as HeaderSource's value, "" if it has no run or its first
// run has no position.
func (s Source) Format() string {
	if len(s.Runs) == 0 || s.Runs[0].Pos == 0 {
		return ""
	}
	b := strconv.AppendUint(nil, s.From, 10)
	prev := s.From
	for _, r := range s.Runs {
		b = append(b, ' ')
		b = strconv.AppendUint(b, r.Pos-prev, 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(r.N), 10)
		prev = r.Pos
	}
	return string(b)
}

// Last is the position of s's last run (0 if none).
func (s Source) Last() uint64 {
	if len(s.Runs) == 0 {
		return 0
	}
	return s.Runs[len(s.Runs)-1].Pos
}

// ParseSource reads HeaderSource's value; ok is false if v is empty or
// does not read: runs in increasing positions from FROM (> 0) on, counts
// not negative.
func ParseSource(v string) (s Source, ok bool) {
	if v == "" {
		return s, false
	}
	f, rest, _ := strings.Cut(v, " ")
	from, err := strconv.ParseUint(f, 10, 64)
	if err != nil || from == 0 || rest == "" {
		return s, false
	}
	s.From = from
	pos := from
	for rest != "" {
		var item string
		item, rest, _ = strings.Cut(rest, " ")
		d, n, found := strings.Cut(item, ":")
		delta, err1 := strconv.ParseUint(d, 10, 64)
		count, err2 := strconv.Atoi(n)
		if !found || err1 != nil || err2 != nil || count < 0 || (len(s.Runs) > 0 && delta == 0) || pos+delta < pos {
			return Source{}, false
		}
		pos += delta
		s.Runs = append(s.Runs, SourceRun{pos, count})
	}
	return s, true
}

// Partition is the MATCHES partition of a match of rule on group key,
// hash(rule, key) mod n: FNV-1a (32-bit) over rule, a zero
// byte and key, written out so the hot path allocates no hasher. Stable
// across versions: MATCHES partitions depend on it, and the windows
// stage recognises by it the matches a partition's positions account for.
func Partition(rule, key string, n uint32) uint32 {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(rule); i++ {
		h = (h ^ uint32(rule[i])) * prime
	}
	h *= prime // the zero separator: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * prime
	}
	return h % n
}
