package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// Packet size limits. RFC 4253 §6.1 asks for 35000 bytes at least; OpenSSH accepts 256 KiB.
const (
	maxPacket  = 256 << 10
	minPadding = 4
)

// Ciphers: only AEAD ones, so no MAC is ever negotiated into use (RFC 5647 as OpenSSH has it:
// the packet length is additional data, not encrypted).
const (
	CipherAES128GCM = "aes128-gcm@openssh.com"
	CipherAES256GCM = "aes256-gcm@openssh.com"
)

// macAdvertised is what the MAC name-lists say. With an AEAD cipher no MAC is used, but some
// peers (AsyncSSH) insist on a common name before they look at the cipher.
var macAdvertised = []string{"hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"}

// cipherKeySize returns the key size of a supported cipher, 0 for an unknown one.
func cipherKeySize(name string) int {
	switch name {
	case CipherAES128GCM:
		return 16
	case CipherAES256GCM:
		return 32
	}
	return 0
}

const (
	gcmIVSize  = 12
	gcmTagSize = 16
)

// packetCipher protects packets in one direction. The zero value is the "none" cipher of the
// first key exchange.
type packetCipher struct {
	aead cipher.AEAD // nil before the first NEWKEYS
	iv   [gcmIVSize]byte
}

func newGCM(key, iv []byte) (*packetCipher, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	c := &packetCipher{aead: aead}
	copy(c.iv[:], iv)
	return c, nil
}

// next increments the invocation counter: the last 8 bytes of the nonce (RFC 5647 §7.1).
func (c *packetCipher) next() {
	ctr := binary.BigEndian.Uint64(c.iv[4:])
	binary.BigEndian.PutUint64(c.iv[4:], ctr+1)
}

func (c *packetCipher) blockSize() int {
	if c.aead == nil {
		return 8
	}
	return 16
}

// seal frames payload into a packet in dst: uint32 length, padding length, payload, random
// padding, and the tag. rand fills the padding.
func (c *packetCipher) seal(dst, payload []byte, rand io.Reader) ([]byte, error) {
	bs := c.blockSize()
	// Aligned: the whole packet for the none cipher; the encrypted part (everything after the
	// length) for AES-GCM.
	aligned := 1 + len(payload)
	if c.aead == nil {
		aligned += 4
	}
	pad := bs - aligned%bs
	if pad < minPadding {
		pad += bs
	}
	length := 1 + len(payload) + pad
	if length > maxPacket {
		return nil, fmt.Errorf("ssh: packet of %d bytes is larger than %d", length, maxPacket)
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, uint32(length))
	dst = append(dst, byte(pad))
	dst = append(dst, payload...)
	n := len(dst)
	dst = append(dst, make([]byte, pad)...)
	if _, err := io.ReadFull(rand, dst[n:]); err != nil {
		return nil, err
	}
	if c.aead == nil {
		return dst, nil
	}
	dst = slices.Grow(dst, gcmTagSize) // the tag goes in place, after the plaintext
	plain := dst[start+4:]
	out := c.aead.Seal(plain[:0], c.iv[:], plain, dst[start:start+4])
	c.next()
	return dst[:start+4+len(out)], nil
}

// open reads one packet from r and returns its payload; buf is scratch space it may reuse.
func (c *packetCipher) open(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	length := binary.BigEndian.Uint32(hdr[:])
	bs := uint32(c.blockSize())
	aligned := length
	if c.aead == nil {
		aligned += 4
	}
	if length < 1+minPadding || length > maxPacket || aligned%bs != 0 {
		return nil, fmt.Errorf("%w: packet length %d", ErrMalformed, length)
	}
	n := int(length)
	if c.aead != nil {
		n += gcmTagSize
	}
	buf, err := readGrowing(r, buf[:0], n)
	if err != nil {
		return nil, err
	}
	plain := buf
	if c.aead != nil {
		plain, err = c.aead.Open(buf[:0], c.iv[:], buf, hdr[:])
		if err != nil {
			return nil, errMAC
		}
		c.next()
	}
	pad := int(plain[0])
	if pad < minPadding || pad >= len(plain)-1 {
		return nil, fmt.Errorf("%w: padding length %d in a packet of %d", ErrMalformed, pad, len(plain))
	}
	return plain[1 : len(plain)-pad], nil
}

// readChunk is the most open reads before the bytes it has announced arrive: a peer that
// sends a packet length and then nothing does not get a 256 KiB buffer for it.
const readChunk = 16 << 10

// readGrowing reads n bytes from r into buf, growing it as the bytes arrive.
func readGrowing(r io.Reader, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), max(readChunk, len(buf))))
		}
		end := min(n, cap(buf))
		k, err := io.ReadFull(r, buf[len(buf):end])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

var errMAC = fmt.Errorf("ssh: packet authentication failed")
