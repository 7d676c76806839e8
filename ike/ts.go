package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// SelectorFromPrefix is the traffic selector of an IPv4 prefix, any protocol and port.
func SelectorFromPrefix(p netip.Prefix) TrafficSelector {
	p = p.Masked()
	start := p.Addr()
	s := binary.BigEndian.Uint32(start.AsSlice())
	e := s | (1<<(32-p.Bits()) - 1)
	if p.Bits() == 0 {
		e = 0xFFFFFFFF
	}
	var eb [4]byte
	binary.BigEndian.PutUint32(eb[:], e)
	return TrafficSelector{StartPort: 0, EndPort: 0xFFFF, Start: start, End: netip.AddrFrom4(eb)}
}

// ParseSelectors reads "10.1.0.0/24, 10.2.0.0/16" (a bare address is a /32).
func ParseSelectors(s string) ([]TrafficSelector, error) {
	var out []TrafficSelector
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			f += "/32"
		}
		p, err := netip.ParsePrefix(f)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("ike: %q is not an IPv4 prefix", f)
		}
		out = append(out, SelectorFromPrefix(p))
	}
	return out, nil
}

// prefixOf reports the prefix that is exactly start..end, if there is one.
func prefixOf(start, end netip.Addr) (netip.Prefix, bool) {
	if !start.Is4() || !end.Is4() {
		return netip.Prefix{}, false
	}
	s, e := binary.BigEndian.Uint32(start.AsSlice()), binary.BigEndian.Uint32(end.AsSlice())
	for bits := 0; bits <= 32; bits++ {
		size := uint64(1) << (32 - bits)
		if uint64(s)%size == 0 && uint64(s)+size-1 == uint64(e) {
			return netip.PrefixFrom(start, bits), true
		}
	}
	return netip.Prefix{}, false
}

func u32(a netip.Addr) uint32 { return binary.BigEndian.Uint32(a.AsSlice()) }

// intersect returns the overlap of two selectors.
func intersect(a, b TrafficSelector) (TrafficSelector, bool) {
	if a.Protocol != 0 && b.Protocol != 0 && a.Protocol != b.Protocol {
		return TrafficSelector{}, false
	}
	r := TrafficSelector{Protocol: max(a.Protocol, b.Protocol)}
	r.StartPort, r.EndPort = max(a.StartPort, b.StartPort), min(a.EndPort, b.EndPort)
	if r.StartPort > r.EndPort {
		return r, false
	}
	s, e := max(u32(a.Start), u32(b.Start)), min(u32(a.End), u32(b.End))
	if s > e {
		return r, false
	}
	var sb, eb [4]byte
	binary.BigEndian.PutUint32(sb[:], s)
	binary.BigEndian.PutUint32(eb[:], e)
	r.Start, r.End = netip.AddrFrom4(sb), netip.AddrFrom4(eb)
	return r, true
}

// narrow intersects what the peer proposed with what we allow (RFC 7296 §2.9). An empty
// "allowed" accepts the proposal as it is.
func narrow(proposed, allowed []TrafficSelector) []TrafficSelector {
	if len(allowed) == 0 {
		return proposed
	}
	var out []TrafficSelector
	for _, a := range allowed {
		for _, p := range proposed {
			if r, ok := intersect(p, a); ok {
				out = append(out, r)
			}
		}
	}
	return out
}

// SelectorsString writes selectors as charon logs them: "10.1.0.0/24 10.2.0.1/32".
func SelectorsString(tss []TrafficSelector) string {
	var parts []string
	for _, ts := range tss {
		parts = append(parts, ts.String())
	}
	return strings.Join(parts, " ")
}
