package transport

import (
	"bytes"
	"fmt"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// The seeds in testdata/fuzz are the clear-text packets of real first key exchanges: x/crypto/ssh's
// client and server and OpenSSH's client against tokenlab's ends; record_test.go writes them.

// FuzzParseKexInit: any KEXINIT parses or is ErrMalformed; what parses marshals back to a
// message that parses the same, and negotiation with our own offer never panics.
func FuzzParseKexInit(f *testing.F) {
	ours := (&kexInit{kex: DefaultKeyExchanges, hostKey: []string{gossh.KeyAlgoED25519}, cipherCS: DefaultCiphers,
		cipherSC: DefaultCiphers, macCS: macAdvertised, macSC: macAdvertised, compCS: []string{"none"}, compSC: []string{"none"}}).marshal()
	f.Add(ours)
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := parseKexInit(p)
		if err != nil {
			if !isMalformed(err) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		again, err := parseKexInit(m.marshal())
		if err != nil {
			t.Fatalf("re-marshalled KEXINIT does not parse: %v", err)
		}
		if fmt.Sprint(again) != fmt.Sprint(m) {
			t.Fatalf("round trip: %v != %v", again, m)
		}
		o, _ := parseKexInit(ours)
		if a, err := negotiate(m, o); err == nil {
			if _, ok := lookupKex(a.kex); !ok || cipherKeySize(a.cipherCS) == 0 || cipherKeySize(a.cipherSC) == 0 {
				t.Fatalf("negotiated something we do not support: %+v", a)
			}
		}
		negotiate(o, m)
		guessRight(m, o)
	})
}

// FuzzParseECDHReply: any KEX_ECDH_REPLY parses or is ErrMalformed; what parses marshals back
// to the same bytes, and its signature and host key parsers return errors, never panic.
func FuzzParseECDHReply(f *testing.F) {
	f.Add((&ecdhReply{hostKey: []byte("k"), q: make([]byte, 32), sig: []byte("s")}).marshal())
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := parseECDHReply(p)
		if err != nil {
			if !isMalformed(err) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(r.marshal(), p) {
			t.Fatal("KEX_ECDH_REPLY does not marshal back to its bytes")
		}
		ParseSignature(r.sig)
		gossh.ParsePublicKey(r.hostKey)
		parseECDHInit(marshalECDHInit(r.q))
	})
}

func isMalformed(err error) bool {
	for e := err; e != nil; {
		if e == ErrMalformed {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}
