package ike

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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

// Equal reports whether two identities are the same; distinguished names compare RDN by RDN
// and attribute by attribute, so that a PrintableString and a UTF8String of the same text
// match.
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

// dnString renders a name as RFC 4514 does, in the order of the DER: attributes of one RDN
// joined by "+", special characters escaped. It is for people; names compare with dnEqual.
func dnString(rdn pkix.RDNSequence) string {
	var parts []string
	for _, set := range rdn {
		var attrs []string
		for _, a := range set {
			name := a.Type.String()
			for _, d := range dnAttrs {
				if d.oid.Equal(a.Type) {
					name = d.name
				}
			}
			attrs = append(attrs, name+"="+escapeDNValue(fmt.Sprint(a.Value)))
		}
		parts = append(parts, strings.Join(attrs, "+"))
	}
	return strings.Join(parts, ", ")
}

// escapeDNValue escapes what RFC 4514 §2.4 says must be.
func escapeDNValue(v string) string {
	var b strings.Builder
	for i, r := range v {
		switch {
		case strings.ContainsRune(`,+"\<>;`, r),
			i == 0 && (r == ' ' || r == '#'),
			i == len(v)-1 && r == ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dnAttr is one attribute of a distinguished name: its type, and its value as text when it is
// one of the directory string types (so that a PrintableString and a UTF8String of the same
// text are equal), else as DER.
type dnAttr struct {
	oid, value string
}

// parseRDNs decodes a DER Name into its RDNs, each the sorted set of its attributes.
func parseRDNs(der []byte) ([][]dnAttr, bool) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, false
	}
	var out [][]dnAttr
	for !seq.Empty() {
		var set cryptobyte.String
		if !seq.ReadASN1(&set, cbasn1.SET) || set.Empty() {
			return nil, false
		}
		var rdn []dnAttr
		for !set.Empty() {
			var atv, elem cryptobyte.String
			var oid asn1.ObjectIdentifier
			var tag cbasn1.Tag
			if !set.ReadASN1(&atv, cbasn1.SEQUENCE) || !atv.ReadASN1ObjectIdentifier(&oid) ||
				!atv.ReadAnyASN1Element(&elem, &tag) || !atv.Empty() {
				return nil, false
			}
			v, ok := dnValue(elem, tag)
			if !ok {
				return nil, false
			}
			rdn = append(rdn, dnAttr{oid.String(), v})
		}
		slices.SortFunc(rdn, func(a, b dnAttr) int {
			return cmp.Or(strings.Compare(a.oid, b.oid), strings.Compare(a.value, b.value))
		})
		out = append(out, rdn)
	}
	return out, true
}

// dnValue is an attribute value as dnAttr keeps it: "s:" and the text of a string type, or
// "x:" and the DER of anything else.
func dnValue(elem cryptobyte.String, tag cbasn1.Tag) (string, bool) {
	var content cryptobyte.String
	if e := elem; !e.ReadAnyASN1(&content, &tag) {
		return "", false
	}
	switch tag {
	case cbasn1.UTF8String, cbasn1.PrintableString, cbasn1.IA5String, cbasn1.T61String, 18 /* NumericString */ :
		if !utf8.Valid(content) {
			return "", false
		}
		return "s:" + string(content), true
	case 30: // BMPString: UTF-16BE
		if len(content)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(content)/2)
		for i := range u {
			u[i] = uint16(content[2*i])<<8 | uint16(content[2*i+1])
		}
		return "s:" + string(utf16.Decode(u)), true
	}
	return "x:" + string(elem), true
}

// dnEqual compares two DER names structurally: the same number of RDNs, each with the same set
// of attributes, string values compared as text whatever their string type.
func dnEqual(a, b []byte) bool {
	ra, ok := parseRDNs(a)
	if !ok {
		return false
	}
	rb, ok := parseRDNs(b)
	if !ok || len(ra) != len(rb) {
		return false
	}
	for i := range ra {
		if !slices.Equal(ra[i], rb[i]) {
			return false
		}
	}
	return true
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
