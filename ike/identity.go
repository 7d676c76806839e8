package ike

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Identity is the content of an ID payload. RFC 7296 §3.5.
type Identity struct {
	Type IDType
	Data []byte
}

// body is the ID payload body: type, three reserved bytes, data. Its PRF is MACedIDFor[IR].
func (id Identity) body() []byte {
	return append([]byte{byte(id.Type), 0, 0, 0}, id.Data...)
}

// Equal reports whether two identities are the same; distinguished names compare by their
// attributes, so that a PrintableString and a UTF8String of the same text match.
func (id Identity) Equal(o Identity) bool {
	if id.Type != o.Type {
		return false
	}
	switch id.Type {
	case IDFQDN, IDRFC822:
		return strings.EqualFold(string(id.Data), string(o.Data))
	case IDDERDN:
		return dnEqual(id.Data, o.Data)
	}
	return bytes.Equal(id.Data, o.Data)
}

func (id Identity) String() string {
	switch id.Type {
	case IDFQDN, IDRFC822, IDKeyID:
		return string(id.Data)
	case IDIPv4Addr, IDIPv6Addr:
		if a, ok := netip.AddrFromSlice(id.Data); ok {
			return a.String()
		}
	case IDDERDN:
		var rdn pkix.RDNSequence
		if rest, err := asn1.Unmarshal(id.Data, &rdn); err == nil && len(rest) == 0 {
			return dnString(rdn)
		}
	}
	return fmt.Sprintf("ID(%d:%x)", id.Type, id.Data)
}

// ParseIdentity reads an identity as strongSwan writes one: an IP address, "user@example"
// (email), "C=CH, O=Test, CN=gw" (a distinguished name, in the order written), "@fqdn" or
// a bare host name (FQDN).
func ParseIdentity(s string) (Identity, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Identity{}, fmt.Errorf("ike: empty identity")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Is4() {
			b := a.As4()
			return Identity{IDIPv4Addr, b[:]}, nil
		}
		b := a.As16()
		return Identity{IDIPv6Addr, b[:]}, nil
	}
	if strings.HasPrefix(s, "@") {
		return Identity{IDFQDN, []byte(s[1:])}, nil
	}
	if strings.Contains(s, "=") {
		der, err := parseDN(s)
		if err != nil {
			return Identity{}, err
		}
		return Identity{IDDERDN, der}, nil
	}
	if strings.Contains(s, "@") {
		return Identity{IDRFC822, []byte(s)}, nil
	}
	return Identity{IDFQDN, []byte(s)}, nil
}

var dnAttrs = []struct {
	name string
	oid  asn1.ObjectIdentifier
}{
	{"C", asn1.ObjectIdentifier{2, 5, 4, 6}},
	{"ST", asn1.ObjectIdentifier{2, 5, 4, 8}},
	{"L", asn1.ObjectIdentifier{2, 5, 4, 7}},
	{"O", asn1.ObjectIdentifier{2, 5, 4, 10}},
	{"OU", asn1.ObjectIdentifier{2, 5, 4, 11}},
	{"CN", asn1.ObjectIdentifier{2, 5, 4, 3}},
	{"SN", asn1.ObjectIdentifier{2, 5, 4, 4}},
	{"E", asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}},
}

// parseDN encodes "C=CH, O=Test, CN=gw.test" as a DER Name with one attribute per RDN, in the
// order written (as strongSwan and the certificates `pki` issues have it).
func parseDN(s string) ([]byte, error) {
	var rdn pkix.RDNSequence
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("ike: distinguished name %q: %q is not ATTR=value", s, part)
		}
		i := slices.IndexFunc(dnAttrs, func(a struct {
			name string
			oid  asn1.ObjectIdentifier
		}) bool {
			return strings.EqualFold(a.name, strings.TrimSpace(k))
		})
		if i < 0 {
			return nil, fmt.Errorf("ike: distinguished name %q: unknown attribute %q", s, k)
		}
		rdn = append(rdn, pkix.RelativeDistinguishedNameSET{{Type: dnAttrs[i].oid, Value: strings.TrimSpace(v)}})
	}
	return asn1.Marshal(rdn)
}

func dnString(rdn pkix.RDNSequence) string {
	var parts []string
	for _, set := range rdn {
		for _, a := range set {
			name := a.Type.String()
			for _, d := range dnAttrs {
				if d.oid.Equal(a.Type) {
					name = d.name
				}
			}
			parts = append(parts, fmt.Sprintf("%s=%v", name, a.Value))
		}
	}
	return strings.Join(parts, ", ")
}

// dnEqual compares two DER names attribute by attribute, ignoring the string types.
func dnEqual(a, b []byte) bool {
	var ra, rb pkix.RDNSequence
	if rest, err := asn1.Unmarshal(a, &ra); err != nil || len(rest) != 0 {
		return false
	}
	if rest, err := asn1.Unmarshal(b, &rb); err != nil || len(rest) != 0 {
		return false
	}
	return dnString(ra) == dnString(rb)
}

// certMatches reports whether a certificate vouches for an identity: the subject for a DN, a
// subjectAltName for an FQDN, an email address or an IP address (RFC 7296 §3.5, RFC 4945 §3.1).
func certMatches(c *x509.Certificate, id Identity) bool {
	switch id.Type {
	case IDDERDN:
		return dnEqual(id.Data, c.RawSubject)
	case IDFQDN:
		return slices.ContainsFunc(c.DNSNames, func(n string) bool { return strings.EqualFold(n, string(id.Data)) })
	case IDRFC822:
		return slices.ContainsFunc(c.EmailAddresses, func(n string) bool { return strings.EqualFold(n, string(id.Data)) })
	case IDIPv4Addr, IDIPv6Addr:
		a, ok := netip.AddrFromSlice(id.Data)
		return ok && slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool {
			b, ok := netip.AddrFromSlice(ip)
			return ok && b.Unmap() == a.Unmap()
		})
	}
	return false
}
