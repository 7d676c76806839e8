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

// TestCertificateUsage: a peer's certificate must be meant for IKE: digitalSignature when it
// has a key usage, and any, ipsecIKE, serverAuth or clientAuth when it has an extended key
// usage. A code-signing certificate from the same CA does not authenticate anyone.
func TestCertificateUsage(t *testing.T) {
	p := newTestPKI(t)
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	id, _ := ParseIdentity("gw.test")
	for _, tc := range []struct {
		name    string
		ku      x509.KeyUsage
		eku     []x509.ExtKeyUsage
		unknown []asn1.ObjectIdentifier
		ok      bool
	}{
		{"no extensions", 0, nil, nil, true},
		{"digitalSignature", x509.KeyUsageDigitalSignature, nil, nil, true},
		{"serverAuth", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil, true},
		{"clientAuth", 0, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, true},
		{"any", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, nil, true},
		{"ipsecIKE", x509.KeyUsageDigitalSignature, nil, []asn1.ObjectIdentifier{oidKPIPsecIKE}, true},
		{"codeSigning and serverAuth", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageServerAuth}, nil, true},
		{"codeSigning", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, nil, false},
		{"emailProtection", x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, nil, false},
		{"an unknown purpose", x509.KeyUsageDigitalSignature, nil, []asn1.ObjectIdentifier{{1, 2, 3, 4}}, false},
		{"keyEncipherment", x509.KeyUsageKeyEncipherment, nil, nil, false},
		{"nonRepudiation alone", x509.KeyUsageContentCommitment, nil, nil, false},
		{"keyAgreement, serverAuth", x509.KeyUsageKeyAgreement, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "gw.test"},
				DNSNames: []string{"gw.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
				KeyUsage: tc.ku, ExtKeyUsage: tc.eku, UnknownExtKeyUsage: tc.unknown}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, k.Public(), p.caKey)
			if err != nil {
				t.Fatal(err)
			}
			_, err = verifyChain([][]byte{der}, roots, id, time.Now())
			if (err == nil) != tc.ok {
				t.Errorf("verifyChain: %v", err)
			}
		})
	}
}
