package ike

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
)

// ChildSA is an ESP SA negotiated over an IKE SA. This package does not carry ESP traffic; the
// keys are there for a later ESP path and for --print-keys.
type ChildSA struct {
	// Initiator is true when we initiated the exchange that created the SA: its keys are
	// taken initiator first (RFC 7296 §2.17).
	Initiator bool
	// InSPI is the SPI we receive with, OutSPI the peer's.
	InSPI, OutSPI uint32
	Suite         Suite
	// TSi and TSr are the negotiated traffic selectors, initiator's and responder's side of
	// the creating exchange.
	TSi, TSr []TrafficSelector
	Keys     ChildKeys
}

// LocalTS and RemoteTS are the SA's traffic selectors seen from our side.
func (c *ChildSA) LocalTS() []TrafficSelector {
	if c.Initiator {
		return c.TSi
	}
	return c.TSr
}

// RemoteTS is the peer's side of the SA's traffic selectors.
func (c *ChildSA) RemoteTS() []TrafficSelector {
	if c.Initiator {
		return c.TSr
	}
	return c.TSi
}

// OutboundKeys are the keys of traffic we send: encryption (with salt for AEADs), integrity.
func (c *ChildSA) OutboundKeys() (encr, integ []byte) {
	if c.Initiator {
		return c.Keys.EncrI, c.Keys.IntegI
	}
	return c.Keys.EncrR, c.Keys.IntegR
}

// InboundKeys are the keys of traffic we receive.
func (c *ChildSA) InboundKeys() (encr, integ []byte) {
	if c.Initiator {
		return c.Keys.EncrR, c.Keys.IntegR
	}
	return c.Keys.EncrI, c.Keys.IntegI
}

func (c *ChildSA) String() string {
	return fmt.Sprintf("ESP %08x_i %08x_o %v %s === %s", c.InSPI, c.OutSPI, c.Suite,
		SelectorsString(c.LocalTS()), SelectorsString(c.RemoteTS()))
}

// PrintKeys writes the SA's SPIs and keys in hex, one line each, in the spirit of
// `ip xfrm state` (for a later ESP path, or Wireshark's ESP SA table).
func (c *ChildSA) PrintKeys(w io.Writer) {
	oe, oi := c.OutboundKeys()
	ie, ii := c.InboundKeys()
	fmt.Fprintf(w, "esp out spi 0x%08x %v enc %s integ %s\n", c.OutSPI, c.Suite, hex.EncodeToString(oe), hexOrNone(oi))
	fmt.Fprintf(w, "esp in  spi 0x%08x %v enc %s integ %s\n", c.InSPI, c.Suite, hex.EncodeToString(ie), hexOrNone(ii))
}

func hexOrNone(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

func newESPSPI() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		// SPIs 1 to 255 are reserved (RFC 4303 §2.1).
		if s := binary.BigEndian.Uint32(b[:]); s > 255 {
			return s
		}
	}
}

func spi32(s uint32) []byte { return binary.BigEndian.AppendUint32(nil, s) }
