package ssh

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Identity is who a connection authenticated as.
type Identity struct {
	User string          // the login name granted
	Key  gossh.PublicKey // the key that signed
	// Certificate is the RFC 6187 key's own certificate, nil for a plain key.
	Certificate *x509.Certificate
	// Name is what the authorizer recognised: a key fingerprint, or the certificate's UPN or CN.
	Name string
}

// Authorizer decides which keys may log in as which users. It is asked before the client
// signs (a query, RFC 4252 §7) and again with the signature, and must answer the same.
type Authorizer interface {
	Authorize(user string, key gossh.PublicKey) (*Identity, error)
}

// ErrNotAuthorized is wrapped by the errors of Keys for a key that may not log in.
var ErrNotAuthorized = errors.New("ssh: key not authorized")

// Keys authorizes plain keys listed per user (authorized_keys) and RFC 6187 certificates
// issued by a CA in CAs.
type Keys struct {
	// Authorized are the plain keys each user may log in with.
	Authorized map[string][]gossh.PublicKey
	// CAs are the trusted roots for RFC 6187 certificates; nil accepts no certificate.
	CAs *x509.CertPool
	// Users maps a certificate's name (its UPN, else its CN) to the users it may log in as.
	// A key "upn:NAME" matches only a certificate whose UPN is NAME, and "cn:NAME" only one
	// without a UPN whose CN is NAME; an untagged key matches either, so a CA that puts
	// "alice@example.com" in some certificate's CN gets that certificate the UPN's users.
	// Tag the entries when the CA is not trusted to keep the two apart. When nil, a
	// certificate may log in as the user it names and no other.
	Users map[string][]string
	// Now is the clock certificates are checked against; nil is time.Now.
	Now func() time.Time
}

// Authorize implements Authorizer.
func (k *Keys) Authorize(user string, key gossh.PublicKey) (*Identity, error) {
	if xk, ok := key.(*X509Key); ok {
		return k.authorizeCertificate(user, xk)
	}
	for _, a := range k.Authorized[user] {
		if bytes.Equal(a.Marshal(), key.Marshal()) {
			return &Identity{User: user, Key: key, Name: gossh.FingerprintSHA256(key)}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s %s for %q", ErrNotAuthorized, key.Type(), gossh.FingerprintSHA256(key), user)
}

func (k *Keys) authorizeCertificate(user string, xk *X509Key) (*Identity, error) {
	now := time.Now
	if k.Now != nil {
		now = k.Now
	}
	if k.CAs == nil {
		return nil, fmt.Errorf("%w: no CA is trusted for certificates", ErrNotAuthorized)
	}
	if err := VerifyChain(xk, k.CAs, PurposeClient, now()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAuthorized, err)
	}
	cert := xk.Certificate()
	name := CertificateUser(cert)
	if name == "" {
		return nil, fmt.Errorf("%w: certificate %q names no user (no UPN, no CN)", ErrNotAuthorized, cert.Subject)
	}
	allowed := []string{name}
	if k.Users != nil {
		tag := "cn:"
		if UserPrincipalName(cert) != "" {
			tag = "upn:"
		}
		allowed = append(slices.Clip(k.Users[name]), k.Users[tag+name]...)
	}
	if !contains(allowed, user) {
		return nil, fmt.Errorf("%w: certificate of %q may not log in as %q", ErrNotAuthorized, name, user)
	}
	return &Identity{User: user, Key: xk, Certificate: cert, Name: name}, nil
}

// ParseAuthorizedKeys parses an OpenSSH authorized_keys file; options are ignored.
func ParseAuthorizedKeys(b []byte) ([]gossh.PublicKey, error) {
	var keys []gossh.PublicKey
	for i, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) == 0 || t[0] == '#' {
			continue
		}
		k, _, _, _, err := gossh.ParseAuthorizedKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// sameKey reports whether two keys are the same key pair: an RFC 6187 key is its
// certificate's key.
func sameKey(a, b gossh.PublicKey) bool {
	return bytes.Equal(plainBlob(a), plainBlob(b))
}

func plainBlob(k gossh.PublicKey) []byte {
	if xk, ok := k.(*X509Key); ok {
		p, err := xk.PlainKey()
		if err != nil {
			return nil
		}
		return p.Marshal()
	}
	return k.Marshal()
}
