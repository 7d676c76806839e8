// Package ike is an IKEv2 initiator and responder (RFC 7296) whose own signatures come from a
// crypto.Signer, so that the key can live on a token behind the middleware.
//
// The package is laid out like crypto/tls and wireguard-go: one struct per payload with
// marshal and unmarshal on cryptobyte (payload.go), the IKE header and the protected SK
// payload (message.go), transforms and key derivation (transform.go, keys.go), the initiator's
// and the responder's handshakes as separate state machines (initiator.go, responder.go), the
// exchanges of an established IKE SA (session.go), and one small file per concern: cookies
// (cookie.go), fragmentation (fragment.go), retransmission timers (timers.go), message-ID
// windows (window.go), UDP framing and NAT detection (transport.go).
package ike
