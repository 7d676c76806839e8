// Package cardsock carries a card's APDUs between processes over a Unix socket: the daemon that
// holds the card serves it, and each connection is one host's connection to the card, with
// transactions and removal as PC/SC has them.
//
// Every message is a big-endian uint32 length and that many bytes. A request is an operation
// byte and its argument; a response a status byte and its result:
//
//	'T' command APDU  -> 0 response APDU      transmit
//	'B'               -> 0                    begin a transaction
//	'E' disposition   -> 0                    end it (0 leave, 1 reset)
//	'S'               -> 0 present removals   card status (1 byte, 8 bytes)
//	'W' present removals -> 0 present removals   wait until the status differs from the one given
//
// Status 1 means the card was removed since the connection was made; 2 carries an error text.
package cardsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Operations and statuses.
const (
	opTransmit = 'T'
	opBegin    = 'B'
	opEnd      = 'E'
	opStatus   = 'S'
	opWait     = 'W'

	statusOK      = 0
	statusRemoved = 1
	statusError   = 2
)

// MaxMessage bounds a message: an extended APDU and its header, with room to spare.
const MaxMessage = 1<<16 + 64

// ErrMessage is returned for a malformed message.
var ErrMessage = errors.New("cardsock: malformed message")

// readMessage reads one length-prefixed message.
func readMessage(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxMessage {
		return nil, fmt.Errorf("%w: length %d outside 1..%d", ErrMessage, n, MaxMessage)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// writeMessage writes one message with a single write.
func writeMessage(w io.Writer, kind byte, payload []byte) error {
	if len(payload)+1 > MaxMessage {
		return fmt.Errorf("%w: %d bytes", ErrMessage, len(payload)+1)
	}
	b := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)+1))
	b[4] = kind
	_, err := w.Write(append(b, payload...))
	return err
}

// request is a decoded request.
type request struct {
	op   byte
	arg  []byte
	disp byte
}

// parseRequest checks a request's operation and argument.
func parseRequest(b []byte) (request, error) {
	r := request{op: b[0], arg: b[1:]}
	switch r.op {
	case opTransmit:
		if len(r.arg) < 4 {
			return r, fmt.Errorf("%w: APDU of %d bytes", ErrMessage, len(r.arg))
		}
	case opBegin, opStatus:
		if len(r.arg) != 0 {
			return r, fmt.Errorf("%w: %q takes no argument", ErrMessage, r.op)
		}
	case opWait:
		if len(r.arg) != 9 || r.arg[0] > 1 {
			return r, fmt.Errorf("%w: card status % X", ErrMessage, r.arg)
		}
	case opEnd:
		if len(r.arg) != 1 || r.arg[0] > 1 {
			return r, fmt.Errorf("%w: disposition % X", ErrMessage, r.arg)
		}
		r.disp = r.arg[0]
	default:
		return r, fmt.Errorf("%w: operation 0x%02X", ErrMessage, r.op)
	}
	return r, nil
}
