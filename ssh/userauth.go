package ssh

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"
)

// Messages of user authentication (RFC 4252 §6, §7).
const (
	msgUserAuthRequest = 50
	msgUserAuthFailure = 51
	msgUserAuthSuccess = 52
	msgUserAuthBanner  = 53
	msgUserAuthPKOK    = 60
)

// Service and method names (RFC 4252, RFC 4254).
const (
	serviceUserAuth   = "ssh-userauth"
	serviceConnection = "ssh-connection"
	methodNone        = "none"
	methodPublicKey   = "publickey"
)

// Bounds of an authentication request: OpenSSH allows user names of 1024 bytes at most, and
// no sane public key blob reaches 64 KiB.
const (
	maxUserName = 1024
	maxNameLen  = 64
)

// errMalformedAuth is wrapped by every error about a user authentication message that does
// not parse.
var errMalformedAuth = errors.New("ssh: malformed user authentication message")

// authRequest is SSH_MSG_USERAUTH_REQUEST (RFC 4252 §5), with the fields of the publickey
// method (§7) when that is the method.
type authRequest struct {
	user, service, method string
	hasSig                bool
	algo                  string
	blob                  []byte
	sig                   []byte
}

// parseAuthRequest parses SSH_MSG_USERAUTH_REQUEST. Methods other than publickey keep only
// their name: the server refuses them.
func parseAuthRequest(p []byte) (*authRequest, error) {
	if len(p) == 0 || p[0] != msgUserAuthRequest {
		return nil, fmt.Errorf("%w: not a request", errMalformedAuth)
	}
	s := cryptobyte.String(p[1:])
	var user, service, method []byte
	if !readString(&s, &user) || !readString(&s, &service) || !readString(&s, &method) {
		return nil, fmt.Errorf("%w: truncated request", errMalformedAuth)
	}
	if len(user) > maxUserName || len(service) > maxNameLen || len(method) > maxNameLen {
		return nil, fmt.Errorf("%w: name too long", errMalformedAuth)
	}
	r := &authRequest{user: string(user), service: string(service), method: string(method)}
	if r.method != methodPublicKey {
		return r, nil
	}
	var hasSig uint8
	var algo []byte
	if !s.ReadUint8(&hasSig) || !readString(&s, &algo) || !readString(&s, &r.blob) {
		return nil, fmt.Errorf("%w: truncated publickey request", errMalformedAuth)
	}
	if len(algo) > maxNameLen {
		return nil, fmt.Errorf("%w: algorithm name too long", errMalformedAuth)
	}
	r.algo = string(algo)
	r.hasSig = hasSig != 0
	if r.hasSig && !readString(&s, &r.sig) {
		return nil, fmt.Errorf("%w: truncated signature", errMalformedAuth)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: trailing data", errMalformedAuth)
	}
	return r, nil
}

// marshal builds the request.
func (r *authRequest) marshal() []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgUserAuthRequest)
	addString(&b, []byte(r.user))
	addString(&b, []byte(r.service))
	addString(&b, []byte(r.method))
	if r.method == methodPublicKey {
		if r.hasSig {
			b.AddUint8(1)
		} else {
			b.AddUint8(0)
		}
		addString(&b, []byte(r.algo))
		addString(&b, r.blob)
		if r.hasSig {
			addString(&b, r.sig)
		}
	}
	return b.BytesOrPanic()
}

// signedData is what a publickey signature covers (RFC 4252 §7).
func signedData(sessionID []byte, user, service, algo string, blob []byte) []byte {
	var b cryptobyte.Builder
	addString(&b, sessionID)
	b.AddUint8(msgUserAuthRequest)
	addString(&b, []byte(user))
	addString(&b, []byte(service))
	addString(&b, []byte(methodPublicKey))
	b.AddUint8(1)
	addString(&b, []byte(algo))
	addString(&b, blob)
	return b.BytesOrPanic()
}

func marshalAuthFailure(methods []string, partial bool) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgUserAuthFailure)
	addString(&b, []byte(strings.Join(methods, ",")))
	if partial {
		b.AddUint8(1)
	} else {
		b.AddUint8(0)
	}
	return b.BytesOrPanic()
}

func parseAuthFailure(p []byte) ([]string, error) {
	s := cryptobyte.String(p[1:])
	var methods []byte
	var partial uint8
	if !readString(&s, &methods) || !s.ReadUint8(&partial) || !s.Empty() {
		return nil, fmt.Errorf("%w: failure", errMalformedAuth)
	}
	if len(methods) == 0 {
		return nil, nil
	}
	return strings.Split(string(methods), ","), nil
}

func marshalPKOK(algo string, blob []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgUserAuthPKOK)
	addString(&b, []byte(algo))
	addString(&b, blob)
	return b.BytesOrPanic()
}

func marshalBanner(msg string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgUserAuthBanner)
	addString(&b, []byte(msg))
	addString(&b, nil)
	return b.BytesOrPanic()
}

// parseSignature parses a signature blob: string format, string blob (RFC 4253 §6.6).
func parseSignature(b []byte) (*gossh.Signature, error) {
	s := cryptobyte.String(b)
	var format, blob []byte
	if !readString(&s, &format) || !readString(&s, &blob) || !s.Empty() {
		return nil, fmt.Errorf("%w: signature", errMalformedAuth)
	}
	return &gossh.Signature{Format: string(format), Blob: blob}, nil
}

// rawKeyAlgorithms are the algorithms tokenlab's server accepts for plain keys: no SHA-1
// ssh-rsa, no DSA.
var rawKeyAlgorithms = []string{
	gossh.KeyAlgoED25519,
	gossh.KeyAlgoECDSA256, gossh.KeyAlgoECDSA384, gossh.KeyAlgoECDSA521,
	gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256,
}

// userKeyAlgorithms is what the server announces in server-sig-algs (RFC 8308 §3.1).
var userKeyAlgorithms = append(append([]string(nil), X509Algorithms...), rawKeyAlgorithms...)

// parseUserKey parses the key of a publickey request and checks it fits algo.
func parseUserKey(algo string, blob []byte) (gossh.PublicKey, error) {
	if !contains(userKeyAlgorithms, algo) {
		return nil, fmt.Errorf("ssh: public key algorithm %q is not accepted", sanitize([]byte(algo)))
	}
	k, err := ParsePublicKey(blob)
	if err != nil {
		return nil, err
	}
	typ := k.Type()
	if algo == gossh.KeyAlgoRSASHA256 || algo == gossh.KeyAlgoRSASHA512 {
		if typ != gossh.KeyAlgoRSA {
			return nil, fmt.Errorf("ssh: %s key for algorithm %s", typ, algo)
		}
	} else if typ != algo {
		return nil, fmt.Errorf("ssh: %s key for algorithm %s", typ, algo)
	}
	return k, nil
}

// verifyUserSignature checks a publickey signature: its format must be the one algo signs
// with, so that an RSA key cannot be downgraded to SHA-1.
func verifyUserSignature(k gossh.PublicKey, algo string, data, sigBlob []byte) error {
	sig, err := parseSignature(sigBlob)
	if err != nil {
		return err
	}
	want := algo
	if _, ok := k.(*X509Key); ok {
		want = SignatureFormat(algo)
	}
	if sig.Format != want {
		return fmt.Errorf("ssh: %s signature for algorithm %s", sanitize([]byte(sig.Format)), algo)
	}
	return k.Verify(data, sig)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
