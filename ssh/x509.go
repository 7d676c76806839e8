package ssh

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"
)

// Public key algorithms of X.509 certificates (RFC 6187 §3).
const (
	KeyAlgoX509ECDSA256      = "x509v3-ecdsa-sha2-nistp256"
	KeyAlgoX509ECDSA384      = "x509v3-ecdsa-sha2-nistp384"
	KeyAlgoX509ECDSA521      = "x509v3-ecdsa-sha2-nistp521"
	KeyAlgoX509RSA2048SHA256 = "x509v3-rsa2048-sha256"
)

// SigAlgoRSA2048SHA256 names the signatures of x509v3-rsa2048-sha256 keys (RFC 6187 §3.3).
const SigAlgoRSA2048SHA256 = "rsa2048-sha256"

// X509Algorithms are the RFC 6187 algorithms tokenlab speaks, in order of preference.
var X509Algorithms = []string{KeyAlgoX509ECDSA256, KeyAlgoX509ECDSA384, KeyAlgoX509ECDSA521, KeyAlgoX509RSA2048SHA256}

// Bounds of a certificate chain in a key blob: real chains are two to four certificates.
const (
	maxChain     = 8
	maxBlobBytes = 64 << 10
)

// ErrMalformedKey is wrapped by every error about an RFC 6187 blob that does not parse.
var ErrMalformedKey = errors.New("ssh: malformed X.509 public key")

// X509Key is a public key that travels with its certificate chain (RFC 6187 §2.1). It is a
// gossh.PublicKey, so host key callbacks and authorizers treat it like any other key.
type X509Key struct {
	algorithm string
	// Chain is the certificate chain, the key's own certificate first; each following one
	// certifies the one before it.
	Chain []*x509.Certificate
	// OCSP holds DER OCSPResponses for the first len(OCSP) certificates of Chain.
	OCSP [][]byte
	blob []byte
}

// NewX509Key returns the key of the certificate chain chain[0], chain[1], ... for the
// algorithm that fits chain[0]'s key.
func NewX509Key(chain []*x509.Certificate, ocsp [][]byte) (*X509Key, error) {
	if len(chain) == 0 || len(chain) > maxChain {
		return nil, fmt.Errorf("ssh: a certificate chain of %d certificates (1 to %d)", len(chain), maxChain)
	}
	if len(ocsp) > len(chain) {
		return nil, fmt.Errorf("ssh: %d OCSP responses for %d certificates", len(ocsp), len(chain))
	}
	algo, err := x509Algorithm(chain[0].PublicKey)
	if err != nil {
		return nil, err
	}
	k := &X509Key{algorithm: algo, Chain: slices.Clone(chain), OCSP: slices.Clone(ocsp)}
	var b cryptobyte.Builder
	addString(&b, []byte(algo))
	b.AddUint32(uint32(len(chain)))
	for _, c := range chain {
		addString(&b, c.Raw)
	}
	b.AddUint32(uint32(len(ocsp)))
	for _, o := range ocsp {
		addString(&b, o)
	}
	k.blob, err = b.Bytes()
	if err != nil {
		return nil, err
	}
	return k, nil
}

// x509Algorithm returns the RFC 6187 algorithm of a certificate's public key.
func x509Algorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyAlgoX509ECDSA256, nil
		case elliptic.P384():
			return KeyAlgoX509ECDSA384, nil
		case elliptic.P521():
			return KeyAlgoX509ECDSA521, nil
		}
		return "", fmt.Errorf("ssh: no RFC 6187 algorithm for ECDSA on %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("ssh: %s needs an RSA key of 2048 bits or more, not %d", KeyAlgoX509RSA2048SHA256, k.N.BitLen())
		}
		return KeyAlgoX509RSA2048SHA256, nil
	}
	return "", fmt.Errorf("ssh: no RFC 6187 algorithm tokenlab speaks for a %T certificate key", pub)
}

// ParseX509Key parses an RFC 6187 public key blob (§2.1):
//
//	string  algorithm ("x509v3-ecdsa-sha2-nistp256", ...)
//	uint32  certificate-count (>= 1)
//	string  certificate[1..certificate-count] (DER)
//	uint32  ocsp-response-count (<= certificate-count)
//	string  ocsp-response[0..ocsp-response-count] (DER)
//
// The algorithm must fit the first certificate's key; trailing bytes are an error.
func ParseX509Key(blob []byte) (*X509Key, error) {
	if len(blob) > maxBlobBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformedKey, len(blob))
	}
	s := cryptobyte.String(blob)
	var algo []byte
	var n uint32
	if !readString(&s, &algo) || !s.ReadUint32(&n) {
		return nil, fmt.Errorf("%w: truncated header", ErrMalformedKey)
	}
	if !slices.Contains(X509Algorithms, string(algo)) {
		return nil, fmt.Errorf("%w: algorithm %q", ErrMalformedKey, sanitize(algo))
	}
	if n == 0 || n > maxChain {
		return nil, fmt.Errorf("%w: %d certificates (1 to %d)", ErrMalformedKey, n, maxChain)
	}
	k := &X509Key{algorithm: string(algo), blob: slices.Clone(blob)}
	for i := range n {
		var der []byte
		if !readString(&s, &der) {
			return nil, fmt.Errorf("%w: certificate %d truncated", ErrMalformedKey, i+1)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrMalformedKey, i+1, err)
		}
		k.Chain = append(k.Chain, c)
	}
	var m uint32
	if !s.ReadUint32(&m) {
		return nil, fmt.Errorf("%w: OCSP response count missing", ErrMalformedKey)
	}
	if m > n {
		return nil, fmt.Errorf("%w: %d OCSP responses for %d certificates", ErrMalformedKey, m, n)
	}
	for i := range m {
		var o []byte
		if !readString(&s, &o) {
			return nil, fmt.Errorf("%w: OCSP response %d truncated", ErrMalformedKey, i+1)
		}
		k.OCSP = append(k.OCSP, slices.Clone(o))
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d bytes after the last OCSP response", ErrMalformedKey, len(s))
	}
	want, err := x509Algorithm(k.Chain[0].PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedKey, err)
	}
	if want != k.algorithm {
		return nil, fmt.Errorf("%w: %s blob holds a certificate for %s", ErrMalformedKey, k.algorithm, want)
	}
	return k, nil
}

// Type returns the RFC 6187 algorithm name.
func (k *X509Key) Type() string { return k.algorithm }

// Marshal returns the RFC 6187 blob.
func (k *X509Key) Marshal() []byte { return slices.Clone(k.blob) }

// Certificate returns the key's own certificate.
func (k *X509Key) Certificate() *x509.Certificate { return k.Chain[0] }

// CryptoPublicKey returns the certificate's public key.
func (k *X509Key) CryptoPublicKey() crypto.PublicKey { return k.Chain[0].PublicKey }

// PlainKey returns the certificate's key as a plain SSH key (ecdsa-sha2-*, ssh-rsa): the
// "certificate as raw SSH2 key" form, as authorized_keys and known_hosts hold it.
func (k *X509Key) PlainKey() (gossh.PublicKey, error) {
	return gossh.NewPublicKey(k.Chain[0].PublicKey)
}

// SignatureFormat returns the name an RFC 6187 signature of algorithm algo carries (§3).
func SignatureFormat(algo string) string {
	switch algo {
	case KeyAlgoX509ECDSA256:
		return gossh.KeyAlgoECDSA256
	case KeyAlgoX509ECDSA384:
		return gossh.KeyAlgoECDSA384
	case KeyAlgoX509ECDSA521:
		return gossh.KeyAlgoECDSA521
	case KeyAlgoX509RSA2048SHA256:
		return SigAlgoRSA2048SHA256
	}
	return ""
}

// Verify checks an RFC 6187 signature over data: ecdsa-sha2-* (RFC 5656 §3.1.2) for ECDSA
// certificates, rsa2048-sha256 (PKCS #1 v1.5 with SHA-256) for RSA ones.
func (k *X509Key) Verify(data []byte, sig *gossh.Signature) error {
	want := SignatureFormat(k.algorithm)
	if sig.Format != want {
		return fmt.Errorf("ssh: %s signature for a %s key, want %s", sanitize([]byte(sig.Format)), k.algorithm, want)
	}
	if len(sig.Rest) != 0 {
		return errors.New("ssh: trailing data in the signature")
	}
	if k.algorithm == KeyAlgoX509RSA2048SHA256 {
		pub := k.Chain[0].PublicKey.(*rsa.PublicKey)
		h := sha256.Sum256(data)
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig.Blob)
	}
	plain, err := k.PlainKey()
	if err != nil {
		return err
	}
	return plain.Verify(data, sig)
}

// X509Signer signs with a crypto.Signer whose certificate chain it presents as an RFC 6187
// key. It is a gossh.MultiAlgorithmSigner, so an x/crypto/ssh client offers it as a user key
// and tokenlab's server presents it as a host key; its one algorithm is the key's RFC 6187
// name, and its signatures carry the plain name (§3).
type X509Signer struct {
	key   *X509Key
	inner gossh.AlgorithmSigner
}

// NewX509Signer returns a signer presenting chain (its key's certificate first) for s, which
// must hold chain[0]'s private key.
func NewX509Signer(s crypto.Signer, chain []*x509.Certificate) (*X509Signer, error) {
	if len(chain) == 0 {
		return nil, errors.New("ssh: an X.509 signer needs a certificate")
	}
	if !samePublicKey(s.Public(), chain[0].PublicKey) {
		return nil, errors.New("ssh: the certificate is not the signer's (public keys differ)")
	}
	key, err := NewX509Key(chain, nil)
	if err != nil {
		return nil, err
	}
	inner, err := gossh.NewSignerFromSigner(s)
	if err != nil {
		return nil, err
	}
	as, ok := inner.(gossh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("ssh: x/crypto/ssh's signer cannot choose algorithms")
	}
	return &X509Signer{key: key, inner: as}, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// PublicKey returns the RFC 6187 key.
func (s *X509Signer) PublicKey() gossh.PublicKey { return s.key }

// Key returns the RFC 6187 key with its chain.
func (s *X509Signer) Key() *X509Key { return s.key }

// Algorithms returns the key's one RFC 6187 algorithm.
func (s *X509Signer) Algorithms() []string { return []string{s.key.algorithm} }

// Sign signs data with the key's algorithm.
func (s *X509Signer) Sign(rand io.Reader, data []byte) (*gossh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, s.key.algorithm)
}

// SignWithAlgorithm signs data for the RFC 6187 algorithm algo, the key's own.
func (s *X509Signer) SignWithAlgorithm(rand io.Reader, data []byte, algo string) (*gossh.Signature, error) {
	if algo != s.key.algorithm && algo != "" {
		return nil, fmt.Errorf("ssh: the %s key cannot sign for %s", s.key.algorithm, algo)
	}
	if s.key.algorithm == KeyAlgoX509RSA2048SHA256 {
		sig, err := s.inner.SignWithAlgorithm(rand, data, gossh.KeyAlgoRSASHA256)
		if err != nil {
			return nil, err
		}
		return &gossh.Signature{Format: SigAlgoRSA2048SHA256, Blob: sig.Blob}, nil
	}
	sig, err := s.inner.Sign(rand, data)
	if err != nil {
		return nil, err
	}
	if want := SignatureFormat(s.key.algorithm); sig.Format != want {
		return nil, fmt.Errorf("ssh: x/crypto/ssh signed %s for %s", sig.Format, want)
	}
	return sig, nil
}

// ParsePublicKey parses a public key blob of any algorithm tokenlab knows: RFC 6187
// certificates here, everything else by x/crypto/ssh.
func ParsePublicKey(blob []byte) (gossh.PublicKey, error) {
	s := cryptobyte.String(blob)
	var algo []byte
	if readString(&s, &algo) && slices.Contains(X509Algorithms, string(algo)) {
		return ParseX509Key(blob)
	}
	return gossh.ParsePublicKey(blob)
}

// readString reads an SSH string.
func readString(s *cryptobyte.String, out *[]byte) bool {
	var n uint32
	if !s.ReadUint32(&n) || uint64(n) > uint64(len(*s)) {
		return false
	}
	return s.ReadBytes(out, int(n))
}

// addString appends an SSH string.
func addString(b *cryptobyte.Builder, s []byte) {
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s) })
}

// sanitize makes a peer's text safe to print: at most 128 bytes, control characters replaced.
func sanitize(b []byte) string {
	if len(b) > 128 {
		b = b[:128]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
