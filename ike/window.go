package ike

import "crypto/sha256"

// window tracks the message IDs of one IKE SA, with a window of one in each direction
// (RFC 7296 §2.3): our next request's ID, the ID we expect of the peer's next request, and our
// last response, sent again when the peer retransmits the request it answers.
type window struct {
	nextOut  uint32
	nextIn   uint32
	lastResp [][]byte
	answered bool // nextIn-1 was answered and lastResp holds the answer
	// lastReq is the hash of the request lastResp answers (of its first fragment when it
	// came in fragments): only that request again gets lastResp again.
	lastReq [sha256.Size]byte
	// firstFragment is the hash of the first fragment of the request being reassembled.
	firstFragment [sha256.Size]byte
}

// requestKind classifies an incoming request's message ID.
type requestKind int

const (
	requestNew         requestKind = iota // the next one: process it
	requestRetransmit                     // the last one again: resend our response
	requestOutOfWindow                    // anything else: drop (§2.3)
)

func (w *window) classify(id uint32) requestKind {
	switch {
	case id == w.nextIn:
		return requestNew
	case w.answered && id == w.nextIn-1:
		return requestRetransmit
	}
	return requestOutOfWindow
}

// answer records our response to the request with ID nextIn, whose hash is req, and moves the
// window on.
func (w *window) answer(resp [][]byte, req [sha256.Size]byte) {
	w.lastResp, w.lastReq, w.answered = resp, req, true
	w.nextIn++
}

// isRetransmit reports whether a datagram is the last request answered, sent again: its hash
// is that request's (of its first fragment).
func (w *window) isRetransmit(raw []byte) bool {
	return w.answered && sha256.Sum256(raw) == w.lastReq
}

// request takes the ID of our next request.
func (w *window) request() uint32 {
	id := w.nextOut
	w.nextOut++
	return id
}
