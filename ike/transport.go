package ike

import (
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// IKE's UDP ports. RFC 7296 §2, RFC 3948 §2.2.
const (
	PortIKE  = 500
	PortNATT = 4500
)

// nonESPMarker precedes IKE messages on a port that also carries UDP-encapsulated ESP.
// RFC 3948 §2.2. As strongSwan does, it is used whenever neither port is 500, so that two
// endpoints on other ports (tests, port-forwarded gateways) agree.
var nonESPMarker = []byte{0, 0, 0, 0}

// needsMarker is the rule of when the non-ESP marker is used.
func needsMarker(local, remote uint16) bool { return local != PortIKE && remote != PortIKE }

// frame returns the datagram for an IKE message between two ports.
func frame(local, remote uint16, msg []byte) []byte {
	if !needsMarker(local, remote) {
		return msg
	}
	return append(append(make([]byte, 0, 4+len(msg)), nonESPMarker...), msg...)
}

var errNotIKE = errors.New("ike: not an IKE message")

// unframe returns the IKE message in a datagram, or errNotIKE for a NAT keepalive (a single
// 0xFF, RFC 3948 §2.3) or an ESP packet (a non-zero SPI where the marker belongs).
func unframe(local, remote uint16, d []byte) ([]byte, error) {
	if !needsMarker(local, remote) {
		return d, nil
	}
	if len(d) < 4 || binary.BigEndian.Uint32(d) != 0 {
		return nil, errNotIKE
	}
	return d[4:], nil
}

// packetConn is what an endpoint needs of a UDP socket; fuzz targets put a memory pipe in its
// place.
type packetConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	Close() error
}

// conn is a UDP socket that carries IKE.
type conn struct {
	pc    packetConn
	local netip.AddrPort
}

func listenUDP(addr netip.AddrPort) (*conn, error) {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("ike: listen on %v: %w", addr, err)
	}
	return &conn{pc: pc, local: pc.LocalAddr().(*net.UDPAddr).AddrPort()}, nil
}

func (c *conn) send(to netip.AddrPort, msgs [][]byte) error {
	for _, m := range msgs {
		if _, err := c.pc.WriteToUDPAddrPort(frame(c.local.Port(), to.Port(), m), to); err != nil {
			return fmt.Errorf("ike: send to %v: %w", to, err)
		}
	}
	return nil
}

// natHash is SHA-1(SPIi | SPIr | IP | Port) of the NAT detection notifications.
// RFC 7296 §2.23.
func natHash(spiI, spiR uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], spiI)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], spiR)
	h.Write(b[:])
	h.Write(ap.Addr().Unmap().AsSlice())
	binary.BigEndian.PutUint16(b[:2], ap.Port())
	h.Write(b[:2])
	return h.Sum(nil)
}

// natNotifies are the NAT_DETECTION_SOURCE_IP and _DESTINATION_IP of an IKE_SA_INIT message.
func natNotifies(spiI, spiR uint64, local, remote netip.AddrPort) []Payload {
	return []Payload{
		&NotifyPayload{Notify: NotifyNATDetectionSourceIP, Data: natHash(spiI, spiR, local)},
		&NotifyPayload{Notify: NotifyNATDetectionDestinationIP, Data: natHash(spiI, spiR, remote)},
	}
}

// detectNAT compares the peer's NAT detection hashes with the addresses the message travelled
// between: whether we are behind a NAT (our address changed) and whether the peer is.
func detectNAT(m *Message, spiI, spiR uint64, local, remote netip.AddrPort) (supported, localNAT, remoteNAT bool) {
	var dst []byte
	srcMatch, haveSrc := false, false
	for _, p := range m.Payloads {
		n, ok := p.(*NotifyPayload)
		if !ok {
			continue
		}
		switch n.Notify {
		case NotifyNATDetectionSourceIP:
			haveSrc = true
			if string(n.Data) == string(natHash(spiI, spiR, remote)) {
				srcMatch = true
			}
		case NotifyNATDetectionDestinationIP:
			dst = n.Data
		}
	}
	if !haveSrc || dst == nil {
		return false, false, false
	}
	return true, string(dst) != string(natHash(spiI, spiR, local)), !srcMatch
}
