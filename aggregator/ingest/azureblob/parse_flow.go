package azureblob

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// nsgProperties is properties of a NetworkSecurityGroupFlowEvent record.
type nsgProperties struct {
	Version int `json:"Version"`
	Flows   []struct {
		Rule  string `json:"rule"`
		Flows []struct {
			Mac        string   `json:"mac"`
			FlowTuples []string `json:"flowTuples"`
		} `json:"flows"`
	} `json:"flows"`
}

// parseNSGFlow emits one event per flow tuple. A tuple that does not parse
// makes the whole record bad: it is dead-lettered whole rather than half
// published.
func parseNSGFlow(env *envelope, o Origin) ([]*event.Event, error) {
	if env.Properties.Raw == nil {
		return nil, fmt.Errorf("%w: NSG flow record without properties", ErrSchema)
	}
	var p nsgProperties
	if err := env.Properties.decode(&p); err != nil {
		return nil, err
	}
	if p.Version != 1 && p.Version != 2 {
		return nil, fmt.Errorf("%w: NSG flow log version %d, want 1 or 2", ErrSchema, p.Version)
	}
	nsg := lastSegment(env.ResourceID)
	var evs []*event.Event
	for _, rf := range p.Flows {
		for _, mf := range rf.Flows {
			mac := mf.Mac
			if mac == "" {
				mac = env.MacAddress
			}
			for _, tuple := range mf.FlowTuples {
				t, err := parseTuple(tuple, tupleNSG, p.Version)
				if err != nil {
					return nil, err
				}
				ev := newEvent(o, len(evs), SourceNSGFlow, t.time)
				t.fill(ev)
				ev.Host = nsg
				ev.App = "nsg-flow"
				setAttr(ev, "rule", rf.Rule)
				setAttr(ev, "nsg_id", env.ResourceID)
				setAttr(ev, "mac", mac)
				setAttr(ev, "flow_version", strconv.Itoa(p.Version))
				evs = append(evs, ev)
			}
		}
	}
	return evs, nil
}

// vnetFlowRecords is flowRecords of a FlowLogFlowEvent record.
type vnetFlowRecords struct {
	Flows []struct {
		ACLID      string `json:"aclID"`
		FlowGroups []struct {
			Rule       string   `json:"rule"`
			FlowTuples []string `json:"flowTuples"`
		} `json:"flowGroups"`
	} `json:"flows"`
}

// parseVNetFlow emits one event per flow tuple of a VNet flow log record.
func parseVNetFlow(env *envelope, o Origin) ([]*event.Event, error) {
	if len(env.FlowRecords) == 0 {
		return nil, fmt.Errorf("%w: VNet flow record without flowRecords", ErrSchema)
	}
	var fr vnetFlowRecords
	if err := json.Unmarshal(env.FlowRecords, &fr); err != nil {
		return nil, fmt.Errorf("%w: flowRecords: %v", ErrSchema, err)
	}
	target := lastSegment(env.TargetResourceID)
	var evs []*event.Event
	for _, f := range fr.Flows {
		for _, g := range f.FlowGroups {
			for _, tuple := range g.FlowTuples {
				t, err := parseTuple(tuple, tupleVNet, 4)
				if err != nil {
					return nil, err
				}
				ev := newEvent(o, len(evs), SourceVNetFlow, t.time)
				t.fill(ev)
				ev.Host = target
				ev.App = "vnet-flow"
				setAttr(ev, "rule", g.Rule)
				setAttr(ev, "acl_id", f.ACLID)
				setAttr(ev, "flow_log_id", env.FlowLogResourceID)
				setAttr(ev, "target_id", env.TargetResourceID)
				setAttr(ev, "mac", env.MacAddress)
				setAttr(ev, "encryption", t.encryption)
				evs = append(evs, ev)
			}
		}
	}
	return evs, nil
}

type tupleFormat int

const (
	tupleNSG  tupleFormat = iota // v1: 8 fields; v2: 13 fields, protocol T/U, decision A/D, state B/C/E
	tupleVNet                    // 13 fields, protocol number, state B/C/E/D (D = denied), encryption
)

// flowTuple is one parsed tuple.
type flowTuple struct {
	time                       time.Time
	src, dst                   string
	srcPort, dstPort           int
	protocol                   string
	direction, decision, state string
	encryption                 string
	pktsOut, bytesOut          string // source to destination
	pktsIn, bytesIn            string // destination to source
	raw                        string
}

func parseTuple(s string, format tupleFormat, version int) (flowTuple, error) {
	f := strings.Split(s, ",")
	want := 8
	if format == tupleVNet || version == 2 {
		want = 13
	}
	if len(f) != want {
		return flowTuple{}, fmt.Errorf("%w: flow tuple %q has %d fields, want %d", ErrSchema, clip(s), len(f), want)
	}
	bad := func(what string) (flowTuple, error) {
		return flowTuple{}, fmt.Errorf("%w: flow tuple %q: bad %s", ErrSchema, clip(s), what)
	}
	t := flowTuple{raw: s}
	ts, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || ts <= 0 {
		return bad("timestamp")
	}
	// VNet flow logs use epoch milliseconds, NSG flow logs seconds; some
	// VNet samples use seconds too, so decide by magnitude.
	if ts > 1e12 {
		t.time = time.UnixMilli(ts).UTC()
	} else {
		t.time = time.Unix(ts, 0).UTC()
	}
	src, err1 := netip.ParseAddr(f[1])
	dst, err2 := netip.ParseAddr(f[2])
	if err1 != nil || err2 != nil {
		return bad("address")
	}
	t.src, t.dst = src.Unmap().String(), dst.Unmap().String()
	if t.srcPort, err1 = parsePort(f[3]); err1 != nil {
		return bad("source port")
	}
	if t.dstPort, err2 = parsePort(f[4]); err2 != nil {
		return bad("destination port")
	}
	switch format {
	case tupleNSG:
		switch f[5] {
		case "T":
			t.protocol = "tcp"
		case "U":
			t.protocol = "udp"
		default:
			return bad("protocol")
		}
	case tupleVNet:
		t.protocol = ianaProtocol(f[5])
		if t.protocol == "" {
			return bad("protocol")
		}
	}
	switch f[6] {
	case "I":
		t.direction = "inbound"
	case "O":
		t.direction = "outbound"
	default:
		return bad("direction")
	}
	var stateField string
	switch format {
	case tupleNSG:
		switch f[7] {
		case "A":
			t.decision = "allow"
		case "D":
			t.decision = "deny"
		default:
			return bad("decision")
		}
		if version == 2 {
			stateField = f[8]
			t.pktsOut, t.bytesOut, t.pktsIn, t.bytesIn = f[9], f[10], f[11], f[12]
		}
	case tupleVNet:
		stateField = f[7]
		t.decision = "allow"
		if stateField == "D" {
			t.decision = "deny"
		}
		t.encryption = f[8]
		t.pktsOut, t.bytesOut, t.pktsIn, t.bytesIn = f[9], f[10], f[11], f[12]
	}
	switch stateField {
	case "":
		if format == tupleVNet || version == 2 {
			return bad("flow state")
		}
	case "B":
		t.state = "begin"
	case "C":
		t.state = "continue"
	case "E":
		t.state = "end"
	case "D":
		if format != tupleVNet {
			return bad("flow state")
		}
		t.state = "denied"
	default:
		return bad("flow state")
	}
	for _, c := range []string{t.pktsOut, t.bytesOut, t.pktsIn, t.bytesIn} {
		if c == "" {
			continue
		}
		if _, err := strconv.ParseUint(c, 10, 64); err != nil {
			return bad("counter")
		}
	}
	return t, nil
}

// fill copies the tuple into the event's typed fields and attrs.
func (t flowTuple) fill(ev *event.Event) {
	ev.Category = "network"
	ev.Action = "flow"
	ev.Outcome = "success"
	if t.decision == "deny" {
		ev.Outcome = "failure"
	}
	ev.SrcIP, ev.DstIP = t.src, t.dst
	ev.SrcPort, ev.DstPort = t.srcPort, t.dstPort
	ev.Protocol = t.protocol
	ev.Message = t.raw
	setAttr(ev, "direction", t.direction)
	setAttr(ev, "decision", t.decision)
	setAttr(ev, "flow_state", t.state)
	setAttr(ev, "packets_out", t.pktsOut)
	setAttr(ev, "bytes_out", t.bytesOut)
	setAttr(ev, "packets_in", t.pktsIn)
	setAttr(ev, "bytes_in", t.bytesIn)
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return n, nil
}

// ianaProtocol names the common IANA protocol numbers and keeps others as
// their number.
func ianaProtocol(s string) string {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return ""
	}
	switch n {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "ipv6-icmp"
	}
	return s
}

// clip shortens input quoted in an error.
func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
