package ike

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

var (
	oidC  = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
)

func mustDER(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// printable and utf8 are one attribute value with the given string type.
func printable(s string) asn1.RawValue {
	return asn1.RawValue{Tag: asn1.TagPrintableString, Bytes: []byte(s)}
}

func utf8s(s string) asn1.RawValue { return asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(s)} }

func rdns(sets ...pkix.RelativeDistinguishedNameSET) pkix.RDNSequence { return sets }

func atv(oid asn1.ObjectIdentifier, v any) pkix.AttributeTypeAndValue {
	return pkix.AttributeTypeAndValue{Type: oid, Value: v}
}

// TestDNEqual: distinguished names compare structurally, RDN by RDN and attribute by
// attribute, never by a rendering: "O=Test, CN=gw.test" inside one value is not two RDNs.
func TestDNEqual(t *testing.T) {
	gw, _ := ParseIdentity("C=CH, O=Test, CN=gw.test")
	for _, tc := range []struct {
		name  string
		other pkix.RDNSequence
		equal bool
	}{
		{"same", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidO, "Test")},
			pkix.RelativeDistinguishedNameSET{atv(oidCN, "gw.test")}), true},
		{"UTF8String for PrintableString", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, utf8s("CH"))},
			pkix.RelativeDistinguishedNameSET{atv(oidO, utf8s("Test"))}, pkix.RelativeDistinguishedNameSET{atv(oidCN, utf8s("gw.test"))}), true},
		{"a comma inside O", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")},
			pkix.RelativeDistinguishedNameSET{atv(oidO, "Test, CN=gw.test")}), false},
		{"one multi-valued RDN", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH"), atv(oidO, "Test"), atv(oidCN, "gw.test")}), false},
		{"another order", rdns(pkix.RelativeDistinguishedNameSET{atv(oidO, "Test")}, pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")},
			pkix.RelativeDistinguishedNameSET{atv(oidCN, "gw.test")}), false},
		{"another case", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidO, "test")},
			pkix.RelativeDistinguishedNameSET{atv(oidCN, "gw.test")}), false},
		{"an attribute more", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidO, "Test")},
			pkix.RelativeDistinguishedNameSET{atv(oidOU, "x")}, pkix.RelativeDistinguishedNameSET{atv(oidCN, "gw.test")}), false},
		{"OU for O", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidOU, "Test")},
			pkix.RelativeDistinguishedNameSET{atv(oidCN, "gw.test")}), false},
		{"a number for a string", rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidO, 7)},
			pkix.RelativeDistinguishedNameSET{atv(oidCN, "gw.test")}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := Identity{IDDERDN, mustDER(t, tc.other)}
			if got := gw.Equal(other); got != tc.equal {
				t.Errorf("%v equal to %v (%x): %v", gw, other, other.Data, got)
			}
			if got := other.Equal(gw); got != tc.equal {
				t.Errorf("not symmetric")
			}
		})
	}
	// Multi-valued RDNs are sets; values of types the comparison does not know compare as DER.
	a := mustDER(t, rdns(pkix.RelativeDistinguishedNameSET{atv(oidO, printable("Test")), atv(oidCN, "gw")}))
	b := mustDER(t, rdns(pkix.RelativeDistinguishedNameSET{atv(oidCN, utf8s("gw")), atv(oidO, "Test")}))
	if !dnEqual(a, b) {
		t.Error("the attributes of one RDN compare in order")
	}
	x := mustDER(t, rdns(pkix.RelativeDistinguishedNameSET{atv(oidO, asn1.RawValue{Tag: 25, Bytes: []byte("a")})}))
	y := mustDER(t, rdns(pkix.RelativeDistinguishedNameSET{atv(oidO, asn1.RawValue{Tag: 25, Bytes: []byte("b")})}))
	if dnEqual(x, y) || !dnEqual(x, x) {
		t.Error("values of an unknown type do not compare as DER")
	}
	if dnEqual([]byte{0x30, 0x03, 0x31, 0x01}, []byte{0x30, 0x03, 0x31, 0x01}) {
		t.Error("malformed names are equal")
	}
}

// TestDNString: the rendering escapes what RFC 4514 says, so different names read
// differently.
func TestDNString(t *testing.T) {
	for _, tc := range []struct {
		rdn  pkix.RDNSequence
		want string
	}{
		{rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidO, "Test, CN=gw.test")}),
			`C=CH, O=Test\, CN=gw.test`},
		{rdns(pkix.RelativeDistinguishedNameSET{atv(oidO, "Test"), atv(oidCN, " a+b ")}), `O=Test+CN=\ a\+b\ `},
	} {
		if got := (Identity{IDDERDN, mustDER(t, tc.rdn)}).String(); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
	}
}

// TestCertMatchesDN: a certificate whose O is "Test, CN=gw.test" (two RDNs) does not vouch for
// C=CH, O=Test, CN=gw.test (three), and its chain does not validate for that identity.
func TestCertMatchesDN(t *testing.T) {
	p := newTestPKI(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw := mustDER(t, rdns(pkix.RelativeDistinguishedNameSET{atv(oidC, "CH")}, pkix.RelativeDistinguishedNameSET{atv(oidO, "Test, CN=gw.test")}))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), RawSubject: raw,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, k.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	target, _ := ParseIdentity("C=CH, O=Test, CN=gw.test")
	if certMatches(cert, target) {
		t.Errorf("certificate %q (2 RDNs) vouches for %v (3 RDNs)", cert.Subject, target)
	}
	if _, err := verifyChain([][]byte{der}, roots, target, time.Now()); err == nil {
		t.Errorf("verifyChain accepted the certificate of %q for %v", cert.Subject, target)
	}
	own := Identity{IDDERDN, cert.RawSubject}
	if !certMatches(cert, own) {
		t.Errorf("certificate does not vouch for its own subject %v", own)
	}
	if _, err := verifyChain([][]byte{der}, roots, own, time.Now()); err != nil {
		t.Errorf("verifyChain for its own subject: %v", err)
	}
}
