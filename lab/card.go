package lab

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// The lab's PIN, which its person types whenever asked.
const labPIN = "123456"

// User is the identity of the lab card's certificates.
const User = "alice"

// labCard is an in-memory YubiKey set up as a user's smartcard: a P-256 key in 9A (PIN once,
// authentication), 9C (PIN always, digital signature) and 9E (no PIN, card authentication),
// each with a certificate from the lab's CA.
type labCard struct {
	dev    *yubikey.Device
	ca     *x509.Certificate
	caKey  crypto.Signer
	certs  map[byte]*x509.Certificate
	issued time.Time
}

func newLabCard(ctx context.Context, now time.Time) (*labCard, error) {
	d, err := yubikey.New(yubikey.Options{Serial: 20261125})
	if err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"tokenlab"}, CommonName: "tokenlab lab CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	lc := &labCard{dev: d, ca: ca, caKey: caKey, certs: map[byte]*x509.Certificate{}, issued: now}

	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		return nil, err
	}
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		return nil, err
	}
	for i, k := range []struct {
		slot, pin byte
		usage     x509.KeyUsage
	}{
		{pivclient.SlotAuthentication, pivclient.PINPolicyOnce, x509.KeyUsageDigitalSignature},
		{pivclient.SlotSignature, pivclient.PINPolicyAlways, x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment},
		{pivclient.SlotCardAuthentication, pivclient.PINPolicyNever, x509.KeyUsageDigitalSignature},
	} {
		pub, err := c.GenerateKey(ctx, k.slot, pivclient.AlgECCP256, k.pin, pivclient.TouchPolicyNever)
		if err != nil {
			return nil, fmt.Errorf("lab card: generating the key in %02x: %w", k.slot, err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:   big.NewInt(int64(10 + i)),
			Subject:        pkix.Name{Organization: []string{"tokenlab"}, CommonName: User},
			EmailAddresses: []string{User + "@tokenlab.test"},
			NotBefore:      now.Add(-time.Hour),
			NotAfter:       now.Add(365 * 24 * time.Hour),
			KeyUsage:       k.usage,
			ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			return nil, err
		}
		if err := c.SetCertificate(ctx, k.slot, der); err != nil {
			return nil, fmt.Errorf("lab card: certificate for %02x: %w", k.slot, err)
		}
		if lc.certs[k.slot], err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	d.Card.Reset() // the set-up's management key and PIN state are not the scenario's
	return lc, nil
}

// issueServer makes a software key and a server certificate from the lab's CA for name: the
// VPN gateway's and the SSH server's host key.
func (lc *labCard) issueServer(name string) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{Organization: []string{"tokenlab"}, CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)}, // the lab's endpoints listen on loopback
		NotBefore:    lc.issued.Add(-time.Hour),
		NotAfter:     lc.issued.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, lc.ca, key.Public(), lc.caKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}
