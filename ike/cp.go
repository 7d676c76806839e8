package ike

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// AddressPool hands out internal IPv4 addresses from a range, one per peer identity, as
// FortiGate's ipv4-start-ip/ipv4-end-ip and strongSwan's pools do. Safe for concurrent use.
type AddressPool struct {
	start, end netip.Addr

	mu     sync.Mutex
	leases map[string]netip.Addr
	owner  map[netip.Addr]string
}

// ParsePool reads "10.40.40.2-10.40.40.20" or a prefix "10.40.40.0/24" (network and broadcast
// addresses excluded).
func ParsePool(s string) (*AddressPool, error) {
	if a, b, ok := strings.Cut(s, "-"); ok {
		start, err1 := netip.ParseAddr(strings.TrimSpace(a))
		end, err2 := netip.ParseAddr(strings.TrimSpace(b))
		if err1 != nil || err2 != nil || !start.Is4() || !end.Is4() || end.Less(start) {
			return nil, fmt.Errorf("ike: pool %q is not FIRST-LAST of IPv4 addresses", s)
		}
		return &AddressPool{start: start, end: end, leases: map[string]netip.Addr{}, owner: map[netip.Addr]string{}}, nil
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return nil, fmt.Errorf("ike: pool %q is not FIRST-LAST or an IPv4 prefix of /30 or wider", s)
	}
	ts := SelectorFromPrefix(p)
	return &AddressPool{start: ts.Start.Next(), end: ts.End.Prev(), leases: map[string]netip.Addr{}, owner: map[netip.Addr]string{}}, nil
}

func (p *AddressPool) String() string { return p.start.String() + "-" + p.end.String() }

// acquire returns the identity's address: the one it had, else the first free one.
func (p *AddressPool) acquire(id string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.leases[id]; ok {
		return a, true
	}
	for a := p.start; a.IsValid() && !p.end.Less(a); a = a.Next() {
		if _, taken := p.owner[a]; !taken {
			p.leases[id], p.owner[a] = a, id
			return a, true
		}
	}
	return netip.Addr{}, false
}

// release frees the identity's address.
func (p *AddressPool) release(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.leases[id]; ok {
		delete(p.leases, id)
		delete(p.owner, a)
	}
}

// Configuration is what a responder assigned through the configuration payload.
type Configuration struct {
	Address netip.Addr
	DNS     []netip.Addr
	Subnets []netip.Prefix // split include
}

func (c Configuration) String() string {
	var parts []string
	if c.Address.IsValid() {
		parts = append(parts, "address "+c.Address.String())
	}
	for _, d := range c.DNS {
		parts = append(parts, "dns "+d.String())
	}
	for _, s := range c.Subnets {
		parts = append(parts, "subnet "+s.String())
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// cpRequest asks for an IPv4 address and DNS servers.
func cpRequest() *CPPayload {
	return &CPPayload{CFGType: cfgRequest, Attributes: []CPAttribute{
		{Type: attrInternalIP4Address}, {Type: attrInternalIP4DNS},
	}}
}

// cpReply encodes an assignment: address, DNS servers, split-include subnets (address and
// mask, RFC 7296 §3.15.1).
func cpReply(c Configuration) *CPPayload {
	cp := &CPPayload{CFGType: cfgReply}
	if c.Address.IsValid() {
		a := c.Address.As4()
		cp.Attributes = append(cp.Attributes, CPAttribute{attrInternalIP4Address, a[:]})
	}
	for _, d := range c.DNS {
		if d.Is4() {
			a := d.As4()
			cp.Attributes = append(cp.Attributes, CPAttribute{attrInternalIP4DNS, a[:]})
		}
	}
	for _, s := range c.Subnets {
		if s.Addr().Is4() {
			ts := SelectorFromPrefix(s)
			a := ts.Start.As4()
			mask := ^uint32(0) << (32 - s.Bits())
			if s.Bits() == 0 {
				mask = 0
			}
			v := append(a[:], byte(mask>>24), byte(mask>>16), byte(mask>>8), byte(mask))
			cp.Attributes = append(cp.Attributes, CPAttribute{attrInternalIP4Subnet, v})
		}
	}
	return cp
}

// parseCPReply reads an assignment; attributes it does not know are ignored.
func parseCPReply(cp *CPPayload) Configuration {
	var c Configuration
	for _, a := range cp.Attributes {
		switch {
		case a.Type == attrInternalIP4Address && len(a.Value) >= 4:
			c.Address = netip.AddrFrom4([4]byte(a.Value[:4]))
		case a.Type == attrInternalIP4DNS && len(a.Value) == 4:
			c.DNS = append(c.DNS, netip.AddrFrom4([4]byte(a.Value)))
		case a.Type == attrInternalIP4Subnet && len(a.Value) == 8:
			mask := uint32(a.Value[4])<<24 | uint32(a.Value[5])<<16 | uint32(a.Value[6])<<8 | uint32(a.Value[7])
			bits := 0
			for mask&0x80000000 != 0 {
				bits++
				mask <<= 1
			}
			c.Subnets = append(c.Subnets, netip.PrefixFrom(netip.AddrFrom4([4]byte(a.Value[:4])), bits).Masked())
		}
	}
	return c
}

// wantsAddress reports whether a CP request asks for an IPv4 address.
func wantsAddress(cp *CPPayload) bool {
	if cp == nil || cp.CFGType != cfgRequest {
		return false
	}
	for _, a := range cp.Attributes {
		if a.Type == attrInternalIP4Address {
			return true
		}
	}
	return false
}
