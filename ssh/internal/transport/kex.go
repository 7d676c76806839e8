package transport

import (
	"crypto"
	"crypto/ecdh"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// Key exchange methods (RFC 8731, RFC 5656 §6).
const (
	KexCurve25519       = "curve25519-sha256"
	KexCurve25519LibSSH = "curve25519-sha256@libssh.org"
	KexECDHP256         = "ecdh-sha2-nistp256"
	KexECDHP384         = "ecdh-sha2-nistp384"
	KexECDHP521         = "ecdh-sha2-nistp521"
)

// Markers in the key exchange name-list that are not methods: RFC 8308 §2.1 and OpenSSH's
// strict key exchange (PROTOCOL §1.10, the Terrapin countermeasure).
const (
	extInfoClient    = "ext-info-c"
	extInfoServer    = "ext-info-s"
	strictKexClient  = "kex-strict-c-v00@openssh.com"
	strictKexServer  = "kex-strict-s-v00@openssh.com"
	compressionNone  = "none"
	nameListReserved = 0
)

// DefaultKeyExchanges and DefaultCiphers are offered when a Config names none.
var (
	DefaultKeyExchanges = []string{KexCurve25519, KexCurve25519LibSSH, KexECDHP256, KexECDHP384, KexECDHP521}
	DefaultCiphers      = []string{CipherAES128GCM, CipherAES256GCM}
)

// kexMethod is an ECDH key exchange: its curve and exchange hash.
type kexMethod struct {
	curve ecdh.Curve
	hash  crypto.Hash
}

func lookupKex(name string) (kexMethod, bool) {
	switch name {
	case KexCurve25519, KexCurve25519LibSSH:
		return kexMethod{ecdh.X25519(), crypto.SHA256}, true
	case KexECDHP256:
		return kexMethod{ecdh.P256(), crypto.SHA256}, true
	case KexECDHP384:
		return kexMethod{ecdh.P384(), crypto.SHA384}, true
	case KexECDHP521:
		return kexMethod{ecdh.P521(), crypto.SHA512}, true
	}
	return kexMethod{}, false
}

func (m kexMethod) newHash() hash.Hash {
	switch m.hash {
	case crypto.SHA384:
		return sha512.New384()
	case crypto.SHA512:
		return sha512.New()
	}
	return sha256.New()
}

// kexInit is SSH_MSG_KEXINIT (RFC 4253 §7.1).
type kexInit struct {
	cookie          [16]byte
	kex             []string
	hostKey         []string
	cipherCS        []string
	cipherSC        []string
	macCS           []string
	macSC           []string
	compCS          []string
	compSC          []string
	langCS          []string
	langSC          []string
	firstKexFollows bool
}

func (m *kexInit) marshal() []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgKexInit)
	b.AddBytes(m.cookie[:])
	for _, l := range [][]string{m.kex, m.hostKey, m.cipherCS, m.cipherSC, m.macCS, m.macSC, m.compCS, m.compSC, m.langCS, m.langSC} {
		addNameList(&b, l)
	}
	if m.firstKexFollows {
		b.AddUint8(1)
	} else {
		b.AddUint8(0)
	}
	b.AddUint32(nameListReserved)
	return b.BytesOrPanic()
}

func parseKexInit(p []byte) (*kexInit, error) {
	if len(p) == 0 || p[0] != msgKexInit {
		return nil, malformed("not a KEXINIT")
	}
	s := cryptobyte.String(p[1:])
	m := &kexInit{}
	var cookie []byte
	if !s.ReadBytes(&cookie, 16) {
		return nil, malformed("KEXINIT cookie")
	}
	copy(m.cookie[:], cookie)
	for i, l := range []*[]string{&m.kex, &m.hostKey, &m.cipherCS, &m.cipherSC, &m.macCS, &m.macSC, &m.compCS, &m.compSC, &m.langCS, &m.langSC} {
		if !readNameList(&s, l) {
			return nil, malformed(fmt.Sprintf("KEXINIT name-list %d", i+1))
		}
	}
	var reserved uint32
	if !readBool(&s, &m.firstKexFollows) || !s.ReadUint32(&reserved) {
		return nil, malformed("KEXINIT trailer")
	}
	// Trailing bytes are allowed: RFC 4253 §7.1 leaves room for extensions.
	return m, nil
}

// algorithms is what a key exchange settled on.
type algorithms struct {
	kex      string
	hostKey  string
	cipherCS string
	cipherSC string
}

// negotiate picks, for each list, the first of the client's that the server also has (RFC 4253
// §7.1).
func negotiate(client, server *kexInit) (algorithms, error) {
	var a algorithms
	pick := func(what string, c, s []string, skip func(string) bool) (string, error) {
		for _, n := range c {
			if skip != nil && skip(n) {
				continue
			}
			if slices.Contains(s, n) {
				return n, nil
			}
		}
		return "", fmt.Errorf("ssh: no common %s (we: %s; peer: %s)", what, strings.Join(c, ","), strings.Join(s, ","))
	}
	var err error
	if a.kex, err = pick("key exchange method", client.kex, server.kex, isKexMarker); err != nil {
		return a, err
	}
	if a.hostKey, err = pick("host key algorithm", client.hostKey, server.hostKey, nil); err != nil {
		return a, err
	}
	if a.cipherCS, err = pick("cipher", client.cipherCS, server.cipherCS, nil); err != nil {
		return a, err
	}
	if a.cipherSC, err = pick("cipher", client.cipherSC, server.cipherSC, nil); err != nil {
		return a, err
	}
	if _, err = pick("compression", client.compCS, server.compCS, nil); err != nil {
		return a, err
	}
	if _, err = pick("compression", client.compSC, server.compSC, nil); err != nil {
		return a, err
	}
	return a, nil
}

func isKexMarker(n string) bool {
	switch n {
	case extInfoClient, extInfoServer, strictKexClient, strictKexServer:
		return true
	}
	return false
}

// guessRight reports whether the sender of a KEXINIT with first_kex_packet_follows guessed the
// method and host key algorithm that negotiation chose (RFC 4253 §7).
func guessRight(client, server *kexInit) bool {
	return len(client.kex) > 0 && len(server.kex) > 0 && client.kex[0] == server.kex[0] &&
		len(client.hostKey) > 0 && len(server.hostKey) > 0 && client.hostKey[0] == server.hostKey[0]
}

// exchangeHash computes H (RFC 5656 §4; RFC 8731 §3.1 for curve25519, whose shared secret is
// encoded as an mpint of the 32 bytes read as a big-endian number).
func exchangeHash(m kexMethod, vc, vs, ic, is, ks, qc, qs, k []byte) []byte {
	var b cryptobyte.Builder
	for _, s := range [][]byte{vc, vs, ic, is, ks, qc, qs} {
		addString(&b, s)
	}
	addMPInt(&b, k)
	h := m.newHash()
	h.Write(b.BytesOrPanic())
	return h.Sum(nil)
}

// deriveKey computes one key of length n (RFC 4253 §7.2): HASH(K || H || letter || session_id),
// extended by HASH(K || H || K1 || ...) as needed.
func deriveKey(m kexMethod, k, h []byte, letter byte, sessionID []byte, n int) []byte {
	var kb cryptobyte.Builder
	addMPInt(&kb, k)
	kEnc := kb.BytesOrPanic()
	d := m.newHash()
	d.Write(kEnc)
	d.Write(h)
	d.Write([]byte{letter})
	d.Write(sessionID)
	out := d.Sum(nil)
	for len(out) < n {
		d.Reset()
		d.Write(kEnc)
		d.Write(h)
		d.Write(out)
		out = d.Sum(out)
	}
	return out[:n]
}

// marshalECDHInit builds SSH_MSG_KEX_ECDH_INIT.
func marshalECDHInit(q []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgKexECDHInit)
	addString(&b, q)
	return b.BytesOrPanic()
}

func parseECDHInit(p []byte) ([]byte, error) {
	if len(p) == 0 || p[0] != msgKexECDHInit {
		return nil, malformed(fmt.Sprintf("message %d where KEX_ECDH_INIT belongs", first(p)))
	}
	s := cryptobyte.String(p[1:])
	var q []byte
	if !readString(&s, &q) || !s.Empty() {
		return nil, malformed("KEX_ECDH_INIT")
	}
	return q, nil
}

// ecdhReply is SSH_MSG_KEX_ECDH_REPLY.
type ecdhReply struct {
	hostKey, q, sig []byte
}

func (r *ecdhReply) marshal() []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgKexECDHReply)
	addString(&b, r.hostKey)
	addString(&b, r.q)
	addString(&b, r.sig)
	return b.BytesOrPanic()
}

func parseECDHReply(p []byte) (*ecdhReply, error) {
	if len(p) == 0 || p[0] != msgKexECDHReply {
		return nil, malformed(fmt.Sprintf("message %d where KEX_ECDH_REPLY belongs", first(p)))
	}
	s := cryptobyte.String(p[1:])
	r := &ecdhReply{}
	if !readString(&s, &r.hostKey) || !readString(&s, &r.q) || !readString(&s, &r.sig) || !s.Empty() {
		return nil, malformed("KEX_ECDH_REPLY")
	}
	return r, nil
}
