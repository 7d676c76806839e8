package ssh

import (
	"bytes"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"log/slog"
	"slices"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// FuzzParseX509Key: no blob panics the RFC 6187 parser; what parses re-marshals to the same
// bytes, names a known algorithm that fits its key, and has no more OCSP responses than
// certificates. Seeds: AsyncSSH's blobs.
func FuzzParseX509Key(f *testing.F) {
	for _, n := range []string{"p256", "p384", "rsa2048"} {
		f.Add(readGolden(f, n+".blob"))
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		k, err := ParseX509Key(blob)
		if err != nil {
			return
		}
		if !bytes.Equal(k.Marshal(), blob) {
			t.Fatal("re-marshalled blob differs")
		}
		if !slices.Contains(X509Algorithms, k.Type()) || len(k.OCSP) > len(k.Chain) || len(k.Chain) == 0 {
			t.Fatalf("parsed %s with %d certificates and %d OCSP responses", k.Type(), len(k.Chain), len(k.OCSP))
		}
		if a, err := x509Algorithm(k.Chain[0].PublicKey); err != nil || a != k.Type() {
			t.Fatalf("algorithm %s for a certificate of %s", k.Type(), a)
		}
		if _, err := ParsePublicKey(blob); err != nil {
			t.Fatalf("ParsePublicKey refuses what ParseX509Key took: %v", err)
		}
	})
}

// FuzzX509Signature: no signature blob panics verification of AsyncSSH's keys, and none but
// the real one verifies over the golden data. Seeds: AsyncSSH's signatures.
func FuzzX509Signature(f *testing.F) {
	names := []string{"p256", "p384", "rsa2048"}
	keys := map[string]*X509Key{}
	for i, n := range names {
		k, err := ParseX509Key(readGolden(f, n+".blob"))
		if err != nil {
			f.Fatal(err)
		}
		keys[n] = k
		f.Add(uint8(i), readGolden(f, n+".sig"))
	}
	f.Fuzz(func(t *testing.T, which uint8, sig []byte) {
		n := names[int(which)%len(names)]
		k := keys[n]
		err := verifyUserSignature(k, k.Type(), goldenData, sig)
		if err == nil {
			if p, perr := parseSignature(sig); perr != nil || !bytes.Equal(gossh.Marshal(p), readGolden(t, n+".sig")) {
				t.Fatalf("a signature other than AsyncSSH's verified for %s", n)
			}
		}
	})
}

// authPackets splits fuzz input into packets: each is a big-endian uint16 length and bytes.
func authPackets(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 && len(out) < 32 {
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func joinPackets(ps ...[]byte) []byte {
	var b []byte
	for _, p := range ps {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// fuzzSessionID is the session identifier of the fuzzed server's connection.
var fuzzSessionID = bytes.Repeat([]byte{0x5a}, 32)

// FuzzAuthRequest drives the server's user authentication with any sequence of packets. No
// input panics it; it never grants more than one login, never after MaxAuthTries failures,
// and only to the authorized user with the authorized key. Seeds: a none request, a query
// and a signed request for the authorized plain key, and a query for AsyncSSH's certificate.
func FuzzAuthRequest(f *testing.F) {
	key := ecKey(f, elliptic.P256())
	signer := plainSigner(f, key)
	ca, err := x509.ParseCertificate(readGolden(f, "ca.der"))
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	auth := &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {signer.PublicKey()}}, CAs: roots}
	srv, err := NewServer(ServerConfig{HostKeys: []gossh.Signer{signer}, Auth: auth, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	algo := signer.PublicKey().Type()
	blob := signer.PublicKey().Marshal()
	sig, err := signer.Sign(rand.Reader, signedData(fuzzSessionID, "alice", serviceConnection, algo, blob))
	if err != nil {
		f.Fatal(err)
	}
	none := (&authRequest{user: "alice", service: serviceConnection, method: methodNone}).marshal()
	query := (&authRequest{user: "alice", service: serviceConnection, method: methodPublicKey, algo: algo, blob: blob}).marshal()
	signed := (&authRequest{user: "alice", service: serviceConnection, method: methodPublicKey, algo: algo, blob: blob, hasSig: true, sig: gossh.Marshal(sig)}).marshal()
	certQuery := (&authRequest{user: "asyncuser", service: serviceConnection, method: methodPublicKey, algo: KeyAlgoX509ECDSA256, blob: readGolden(f, "p256.blob")}).marshal()
	f.Add(joinPackets(none, query, signed))
	f.Add(joinPackets(certQuery, none, signed))
	f.Add(joinPackets(query, query, query, query))
	f.Add(joinPackets(signed[:len(signed)-3]))
	f.Fuzz(func(t *testing.T, in []byte) {
		a := &authState{srv: srv, sessionID: fuzzSessionID}
		for _, p := range authPackets(in) {
			reply, id, err := a.handle(p)
			if a.failures > srv.cfg.MaxAuthTries {
				t.Fatalf("%d failures, limit %d", a.failures, srv.cfg.MaxAuthTries)
			}
			if err != nil {
				return // the connection ends
			}
			if len(reply) == 0 {
				t.Fatal("no reply and no error")
			}
			if id != nil {
				if id.User != "alice" || !sameKey(id.Key, signer.PublicKey()) {
					t.Fatalf("logged in %q with %s", id.User, id.Key.Type())
				}
				return // authentication is over
			}
		}
	})
}

// TestAuthRequestRoundTrip: marshal and parse agree for each request shape.
func TestAuthRequestRoundTrip(t *testing.T) {
	for _, r := range []*authRequest{
		{user: "a", service: serviceConnection, method: methodNone},
		{user: "a", service: serviceConnection, method: methodPublicKey, algo: "ssh-ed25519", blob: []byte{1, 2}},
		{user: "a", service: serviceConnection, method: methodPublicKey, algo: "ssh-ed25519", blob: []byte{1, 2}, hasSig: true, sig: []byte{3}},
	} {
		got, err := parseAuthRequest(r.marshal())
		if err != nil {
			t.Fatal(err)
		}
		if got.user != r.user || got.method != r.method || got.algo != r.algo || !bytes.Equal(got.blob, r.blob) || got.hasSig != r.hasSig || !bytes.Equal(got.sig, r.sig) {
			t.Errorf("round trip: %+v, want %+v", got, r)
		}
	}
	if _, err := parseAuthRequest(append((&authRequest{user: "a", service: "s", method: methodPublicKey, algo: "x", blob: []byte{1}}).marshal(), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
}
