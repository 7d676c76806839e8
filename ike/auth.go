package ike

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SignatureMode chooses how our signature is encoded in the AUTH payload.
type SignatureMode int

// Signature modes.
const (
	// SignatureAuto uses RFC 7427 when the peer announced SIGNATURE_HASH_ALGORITHMS, else
	// RFC 4754 (ECDSA) or RFC 7296's RSA method.
	SignatureAuto SignatureMode = iota
	// SignatureRFC7427 always uses the digital signature method (14).
	SignatureRFC7427
	// SignatureRFC4754 uses ECDSA methods 9, 10 and 11.
	SignatureRFC4754
)

// ParseSignatureMode reads "auto", "rfc7427" or "rfc4754".
func ParseSignatureMode(s string) (SignatureMode, error) {
	switch s {
	case "auto", "":
		return SignatureAuto, nil
	case "rfc7427", "7427":
		return SignatureRFC7427, nil
	case "rfc4754", "4754":
		return SignatureRFC4754, nil
	}
	return 0, fmt.Errorf("ike: signature mode %q is not auto, rfc7427 or rfc4754", s)
}

// ErrAuthentication means the peer's AUTH payload, certificate or identity did not check out.
var ErrAuthentication = errors.New("ike: authentication failed")

// keyPad is the constant of shared-key authentication. RFC 7296 §2.15.
const keyPad = "Key Pad for IKEv2"

// signedOctets is what an AUTH payload covers: the sender's first message (its IKE_SA_INIT
// request or response as sent), the other side's nonce, and prf(SK_p, ID payload body).
// RFC 7296 §2.15.
func signedOctets(p prf, realMessage, nonce, skp []byte, id Identity) []byte {
	mac := p.sum(skp, id.body())
	out := make([]byte, 0, len(realMessage)+len(nonce)+len(mac))
	return append(append(append(out, realMessage...), nonce...), mac...)
}

// sharedKeyAuth is AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>); with
// EAP the shared secret is the MSK. RFC 7296 §2.15, §2.16.
func sharedKeyAuth(p prf, secret, octets []byte) []byte {
	return p.sum(p.sum(secret, []byte(keyPad)), octets)
}

// AlgorithmIdentifiers of RFC 7427 §3 signatures.
var (
	oidECDSASHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSASHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidRSASHA256   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidRSASHA384   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidRSASHA512   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidEd25519     = asn1.ObjectIdentifier{1, 3, 101, 112}
)

type sigAlg struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash // 0 for Ed25519, which signs the octets themselves
	rsa  bool
}

var sigAlgs = []sigAlg{
	{oidECDSASHA256, crypto.SHA256, false}, {oidECDSASHA384, crypto.SHA384, false},
	{oidECDSASHA512, crypto.SHA512, false}, {oidRSASHA256, crypto.SHA256, true},
	{oidRSASHA384, crypto.SHA384, true}, {oidRSASHA512, crypto.SHA512, true}, {oidEd25519, 0, false},
}

func hashID(h crypto.Hash) uint16 {
	switch h {
	case crypto.SHA256:
		return hashSHA256
	case crypto.SHA384:
		return hashSHA384
	case crypto.SHA512:
		return hashSHA512
	}
	return 0
}

// curveHash is the hash that goes with an ECDSA curve (RFC 4754 §3; strongSwan and charon
// follow it for RFC 7427 too).
func curveHash(c elliptic.Curve) (crypto.Hash, AuthMethod, int) {
	switch c {
	case elliptic.P256():
		return crypto.SHA256, AuthECDSA256, 32
	case elliptic.P384():
		return crypto.SHA384, AuthECDSA384, 48
	case elliptic.P521():
		return crypto.SHA512, AuthECDSA521, 66
	}
	return 0, 0, 0
}

// sign makes our AUTH payload with signer over octets. peerHashes are the hash algorithms the
// peer announced (RFC 7427 §4), nil when it announced none.
func sign(signer crypto.Signer, mode SignatureMode, peerHashes []uint16, octets []byte) (*AuthPayload, error) {
	use7427 := mode == SignatureRFC7427 || (mode == SignatureAuto && peerHashes != nil)
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		h, method, size := curveHash(pub.Curve)
		if h == 0 {
			return nil, fmt.Errorf("ike: ECDSA curve %s not supported", pub.Curve.Params().Name)
		}
		if use7427 {
			if peerHashes != nil && !slices.Contains(peerHashes, hashID(h)) {
				// The peer does not take the curve's hash: any it takes will do.
				for _, c := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
					if slices.Contains(peerHashes, hashID(c)) {
						h = c
						break
					}
				}
			}
			sig, err := signDigest(signer, h, octets)
			if err != nil {
				return nil, err
			}
			oid := map[crypto.Hash]asn1.ObjectIdentifier{crypto.SHA256: oidECDSASHA256, crypto.SHA384: oidECDSASHA384, crypto.SHA512: oidECDSASHA512}[h]
			return digitalSignature(pkix.AlgorithmIdentifier{Algorithm: oid}, sig)
		}
		der, err := signDigest(signer, h, octets)
		if err != nil {
			return nil, err
		}
		raw, err := derToRaw(der, size)
		if err != nil {
			return nil, err
		}
		return &AuthPayload{Method: method, Data: raw}, nil
	case *rsa.PublicKey:
		sig, err := signDigest(signer, crypto.SHA256, octets)
		if err != nil {
			return nil, err
		}
		return digitalSignature(pkix.AlgorithmIdentifier{Algorithm: oidRSASHA256, Parameters: asn1.NullRawValue}, sig)
	case ed25519.PublicKey:
		sig, err := signer.Sign(rand.Reader, octets, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("ike: signing AUTH: %w", err)
		}
		return digitalSignature(pkix.AlgorithmIdentifier{Algorithm: oidEd25519}, sig)
	}
	return nil, fmt.Errorf("ike: %T keys cannot sign AUTH payloads", signer.Public())
}

func signDigest(signer crypto.Signer, h crypto.Hash, octets []byte) ([]byte, error) {
	d := h.New()
	d.Write(octets)
	sig, err := signer.Sign(rand.Reader, d.Sum(nil), h)
	if err != nil {
		return nil, fmt.Errorf("ike: signing AUTH: %w", err)
	}
	return sig, nil
}

// digitalSignature is the RFC 7427 §3 AUTH data: the AlgorithmIdentifier's length in one byte,
// the AlgorithmIdentifier, the signature (for ECDSA the DER Ecdsa-Sig-Value).
func digitalSignature(alg pkix.AlgorithmIdentifier, sig []byte) (*AuthPayload, error) {
	der, err := asn1.Marshal(alg)
	if err != nil {
		return nil, err
	}
	data := append(append([]byte{byte(len(der))}, der...), sig...)
	return &AuthPayload{Method: AuthDigitalSignature, Data: data}, nil
}

// derToRaw turns an ASN.1 Ecdsa-Sig-Value into r‖s of size bytes each (RFC 4754 §7).
func derToRaw(der []byte, size int) ([]byte, error) {
	var r, s big.Int
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) || !seq.Empty() {
		return nil, errors.New("ike: the signer returned a malformed ECDSA signature")
	}
	if r.Sign() <= 0 || s.Sign() <= 0 || len(r.Bytes()) > size || len(s.Bytes()) > size {
		return nil, errors.New("ike: the signer returned an ECDSA signature out of range")
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}

// verify checks a peer's signature AUTH payload with the public key of its certificate.
func verify(pub crypto.PublicKey, a *AuthPayload, octets []byte) error {
	switch a.Method {
	case AuthECDSA256, AuthECDSA384, AuthECDSA521:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("%w: %v AUTH with a %T key", ErrAuthentication, a.Method, pub)
		}
		h, method, size := curveHash(k.Curve)
		if method != a.Method || len(a.Data) != 2*size {
			return fmt.Errorf("%w: %v AUTH of %d bytes for a %s key", ErrAuthentication, a.Method, len(a.Data), k.Curve.Params().Name)
		}
		d := h.New()
		d.Write(octets)
		r, s := new(big.Int).SetBytes(a.Data[:size]), new(big.Int).SetBytes(a.Data[size:])
		if !ecdsa.Verify(k, d.Sum(nil), r, s) {
			return fmt.Errorf("%w: %v signature does not verify", ErrAuthentication, a.Method)
		}
		return nil
	case AuthDigitalSignature:
		if len(a.Data) < 1 || int(a.Data[0])+1 > len(a.Data) {
			return fmt.Errorf("%w: malformed digital signature AUTH", ErrAuthentication)
		}
		algDER, sig := a.Data[1:1+int(a.Data[0])], a.Data[1+int(a.Data[0]):]
		var alg pkix.AlgorithmIdentifier
		if rest, err := asn1.Unmarshal(algDER, &alg); err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: malformed AlgorithmIdentifier in AUTH", ErrAuthentication)
		}
		i := slices.IndexFunc(sigAlgs, func(s sigAlg) bool { return s.oid.Equal(alg.Algorithm) })
		if i < 0 {
			return fmt.Errorf("%w: signature algorithm %v not supported", ErrAuthentication, alg.Algorithm)
		}
		sa := sigAlgs[i]
		var digest []byte
		if sa.hash != 0 {
			d := sa.hash.New()
			d.Write(octets)
			digest = d.Sum(nil)
		}
		ok := false
		switch k := pub.(type) {
		case *ecdsa.PublicKey:
			ok = !sa.rsa && sa.hash != 0 && ecdsa.VerifyASN1(k, digest, sig)
		case *rsa.PublicKey:
			ok = sa.rsa && rsa.VerifyPKCS1v15(k, sa.hash, digest, sig) == nil
		case ed25519.PublicKey:
			ok = sa.hash == 0 && ed25519.Verify(k, octets, sig)
		}
		if !ok {
			return fmt.Errorf("%w: %v signature does not verify with the certificate's %T key", ErrAuthentication, alg.Algorithm, pub)
		}
		return nil
	}
	return fmt.Errorf("%w: AUTH method %v not supported", ErrAuthentication, a.Method)
}

// verifyChain validates the peer's certificates (end entity first, then intermediates) up to
// one of the configured CAs, and that the end entity vouches for the peer's identity.
func verifyChain(ders [][]byte, roots *x509.CertPool, id Identity, now time.Time) (*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, fmt.Errorf("%w: the peer sent no certificate", ErrAuthentication)
	}
	if roots == nil {
		return nil, fmt.Errorf("%w: no CA configured to check the peer's certificate", ErrAuthentication)
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("%w: peer certificate: %v", ErrAuthentication, err)
	}
	inter := x509.NewCertPool()
	for _, d := range ders[1:] {
		if c, err := x509.ParseCertificate(d); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: certificate of %q: %v", ErrAuthentication, leaf.Subject, err)
	}
	if err := checkIKEUsage(leaf); err != nil {
		return nil, fmt.Errorf("%w: certificate of %q: %v", ErrAuthentication, leaf.Subject, err)
	}
	if !certMatches(leaf, id) {
		return nil, fmt.Errorf("%w: certificate of %q does not vouch for identity %v", ErrAuthentication, leaf.Subject, id)
	}
	return leaf, nil
}

var (
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtendedKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	// id-kp-ipsecIKE, RFC 4945 §5.1.3.12; crypto/x509 does not name it.
	oidKPIPsecIKE = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 17}
)

// checkIKEUsage checks that a peer's certificate is meant for signing IKE AUTH payloads: a key
// usage extension, when there is one, has digitalSignature (RFC 4945 §5.1.3.2 also allows
// nonRepudiation alone; a certificate only for that is a document signing one, and is refused
// here); an extended key usage extension, when there is one, has anyExtendedKeyUsage,
// id-kp-ipsecIKE (RFC 4945 §5.1.3.12), or serverAuth or clientAuth, which gateways and
// FortiClient or Windows certificates carry. A code-signing or e-mail certificate is refused.
func checkIKEUsage(c *x509.Certificate) error {
	hasExt := func(oid asn1.ObjectIdentifier) bool {
		return slices.ContainsFunc(c.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oid) })
	}
	if hasExt(oidExtKeyUsage) && c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return errors.New("its key usage lacks digitalSignature")
	}
	if !hasExt(oidExtExtendedKeyUsage) {
		return nil
	}
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageAny, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth:
			return nil
		}
	}
	if slices.ContainsFunc(c.UnknownExtKeyUsage, oidKPIPsecIKE.Equal) {
		return nil
	}
	return errors.New("its extended key usage has none of any, ipsecIKE, serverAuth and clientAuth")
}

// certReqData is a CERTREQ's list of SHA-1 hashes of the CAs' SubjectPublicKeyInfo.
// RFC 7296 §3.7.
func certReqData(cas []*x509.Certificate) []byte {
	var out []byte
	for _, c := range cas {
		h := sha1.Sum(c.RawSubjectPublicKeyInfo)
		out = append(out, h[:]...)
	}
	return out
}

// checkPSK compares a peer's shared-key AUTH in constant time.
func checkPSK(p prf, secret, octets, got []byte) error {
	want := sharedKeyAuth(p, secret, octets)
	if subtle.ConstantTimeCompare(want, got) != 1 {
		return fmt.Errorf("%w: shared-key AUTH does not match", ErrAuthentication)
	}
	return nil
}

// parseHashAlgorithms reads SIGNATURE_HASH_ALGORITHMS data: 16-bit identifiers.
func parseHashAlgorithms(b []byte) []uint16 {
	out := []uint16{}
	for len(b) >= 2 {
		out = append(out, uint16(b[0])<<8|uint16(b[1]))
		b = b[2:]
	}
	return out
}

func hashAlgorithmsData() []byte {
	return []byte{0, byte(hashSHA256), 0, byte(hashSHA384), 0, byte(hashSHA512)}
}
