package ssh

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of the certificate fields a login name comes from.
var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// oidUPN is Microsoft's User Principal Name otherName, as smart-card logon certificates
	// carry it ("alice@example.com").
	oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
	// Extended key usages for SSH (RFC 6187 §2.2).
	oidKPSecureShellClient = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 21}
	oidKPSecureShellServer = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 22}
)

// UserPrincipalName returns the UPN otherName of the certificate's subject alternative name,
// or "" when it has none.
func UserPrincipalName(c *x509.Certificate) string {
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oidSubjectAltName) {
			return upnFromSAN(ext.Value)
		}
	}
	return ""
}

// upnFromSAN finds the first UPN in a DER GeneralNames (RFC 5280 §4.2.1.6):
// otherName [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT UTF8String }.
func upnFromSAN(der []byte) string {
	s := cryptobyte.String(der)
	var names cryptobyte.String
	if !s.ReadASN1(&names, cbasn1.SEQUENCE) {
		return ""
	}
	for !names.Empty() {
		var name cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return ""
		}
		if tag != cbasn1.Tag(0).ContextSpecific().Constructed() {
			continue
		}
		var oid asn1.ObjectIdentifier
		var value, str cryptobyte.String
		if !name.ReadASN1ObjectIdentifier(&oid) || !oid.Equal(oidUPN) ||
			!name.ReadASN1(&value, cbasn1.Tag(0).ContextSpecific().Constructed()) ||
			!value.ReadASN1(&str, cbasn1.UTF8String) || !utf8.Valid(str) {
			continue
		}
		return string(str)
	}
	return ""
}

// CertificateUser is the login name a certificate names, as SecureCRT takes it: the UPN of
// the subject alternative name when there is one, else the subject's common name.
func CertificateUser(c *x509.Certificate) string {
	if upn := UserPrincipalName(c); upn != "" {
		return upn
	}
	return c.Subject.CommonName
}

// Certificate purposes for VerifyChain.
const (
	PurposeClient = iota + 1
	PurposeServer
)

// VerifyChain checks an RFC 6187 key's chain against roots at time now. A certificate with
// extended key usages must allow SSH for its purpose: id-kp-secureShellClient (or TLS
// clientAuth, as smart-card certificates have) for users, id-kp-secureShellServer (or
// serverAuth) for hosts (RFC 6187 §2.2).
func VerifyChain(k *X509Key, roots *x509.CertPool, purpose int, now time.Time) error {
	if roots == nil {
		return errors.New("ssh: no trusted CA certificates")
	}
	inter := x509.NewCertPool()
	for _, c := range k.Chain[1:] {
		inter.AddCert(c)
	}
	leaf := k.Chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("ssh: certificate %q: %w", leaf.Subject, err)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("ssh: certificate %q: key usage does not allow digital signatures", leaf.Subject)
	}
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return nil
	}
	if slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil
	}
	tls, ssh := x509.ExtKeyUsageClientAuth, oidKPSecureShellClient
	if purpose == PurposeServer {
		tls, ssh = x509.ExtKeyUsageServerAuth, oidKPSecureShellServer
	}
	if slices.Contains(leaf.ExtKeyUsage, tls) || slices.ContainsFunc(leaf.UnknownExtKeyUsage, ssh.Equal) {
		return nil
	}
	return fmt.Errorf("ssh: certificate %q: extended key usage does not allow SSH %s authentication", leaf.Subject, purposeName(purpose))
}

func purposeName(p int) string {
	if p == PurposeServer {
		return "server"
	}
	return "client"
}
