package ike

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// Cookies, RFC 7296 §2.6. Under load a responder answers IKE_SA_INIT with a COOKIE
// notification and keeps no state; an initiator at a real address repeats its request with the
// cookie. The cookie is <VersionIDofSecret> | HMAC-SHA-256(secret, Ni | IPi | SPIi); the secret
// changes every cookieSecretLifetime and the previous one is still accepted, so a cookie lives
// between one and two lifetimes.

const (
	cookieSecretLifetime = 60 * time.Second
	cookieLen            = 1 + sha256.Size
)

// cookieJar makes and checks cookies. Safe for concurrent use.
type cookieJar struct {
	clock Clock

	mu      sync.Mutex
	version uint8
	secret  [2][32]byte // [version&1]
	born    time.Time
}

func newCookieJar(clock Clock) *cookieJar {
	j := &cookieJar{clock: clock}
	rand.Read(j.secret[0][:])
	rand.Read(j.secret[1][:])
	j.born = clock.Now()
	return j
}

// rotate moves to a new secret for every lifetime that has passed; callers hold mu. The
// current secret's birth advances by whole lifetimes, so a secret is accepted for less than
// two lifetimes after it was made however rarely cookies are asked for.
func (j *cookieJar) rotate() {
	now := j.clock.Now()
	for i := 0; i < 2 && now.Sub(j.born) >= cookieSecretLifetime; i++ {
		j.version++
		rand.Read(j.secret[j.version&1][:])
		j.born = j.born.Add(cookieSecretLifetime)
	}
	if now.Sub(j.born) >= cookieSecretLifetime {
		// Both secrets were just replaced; the current one starts now.
		j.born = now
	}
}

func cookieMAC(secret []byte, version uint8, ni []byte, ip netip.Addr, spiI uint64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(ni)
	m.Write(ip.Unmap().AsSlice())
	m.Write(binary.BigEndian.AppendUint64(nil, spiI))
	return append([]byte{version}, m.Sum(nil)...)
}

// make returns the cookie for an initiator's nonce, address and SPI.
func (j *cookieJar) make(ni []byte, ip netip.Addr, spiI uint64) []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rotate()
	return cookieMAC(j.secret[j.version&1][:], j.version, ni, ip, spiI)
}

// check reports whether a cookie is one we made, with the current or the previous secret.
func (j *cookieJar) check(cookie, ni []byte, ip netip.Addr, spiI uint64) bool {
	if len(cookie) != cookieLen {
		return false
	}
	j.mu.Lock()
	j.rotate()
	v := cookie[0]
	ok := v == j.version || v == j.version-1
	secret := j.secret[v&1]
	j.mu.Unlock()
	return ok && hmac.Equal(cookie, cookieMAC(secret[:], v, ni, ip, spiI))
}
