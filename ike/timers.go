package ike

import "time"

// Timer defaults. RFC 7296 §2.1 leaves the numbers to the implementation; these retransmit
// after 1, 2, 4, 8 and 16 seconds, as charon's 4 s × 1.8ⁿ does in spirit but quicker on the
// loopback links this runs over, and give a negotiation 30 s as FortiGate's negotiate-timeout.
const (
	DefaultNegotiateTimeout = 30 * time.Second
	MinNegotiateTimeout     = 1 * time.Second
	MaxNegotiateTimeout     = 300 * time.Second

	defaultRetransmitBase  = time.Second
	defaultRetransmitTries = 5
)

// retransmission is the schedule of one request: wait base, then twice as long, and so on,
// until tries retransmissions went unanswered.
type retransmission struct {
	base  time.Duration
	tries int
}

// timeout returns how long to wait after the n-th transmission (0 is the first), and false
// when the request should be given up.
func (r retransmission) timeout(n int) (time.Duration, bool) {
	if n > r.tries {
		return 0, false
	}
	return r.base << n, true
}
