package apdu

import (
	"context"
	"errors"
	"fmt"
)

// Transport carries one command APDU to a card and returns the card's response APDU.
// Implementations: the in-process card, the daemon's Unix socket, PC/SC.
type Transport interface {
	Transmit(ctx context.Context, command []byte) ([]byte, error)
}

// Disposition says what happens to the card when a host ends a transaction or disconnects
// (PC/SC's SCARD_LEAVE_CARD and SCARD_RESET_CARD).
type Disposition int

// Dispositions.
const (
	LeaveCard Disposition = iota // security status stays for the next host
	ResetCard                    // a warm reset: selection and security status are dropped
)

func (d Disposition) String() string {
	if d == ResetCard {
		return "reset"
	}
	return "leave"
}

// Transactor is one host's connection to a card that can hold the card for a sequence of
// commands, so that no other host's command comes in between (PC/SC's SCardBeginTransaction).
type Transactor interface {
	Transport
	Begin(ctx context.Context) error
	End(d Disposition) error
	Close() error
}

// ErrRemoved is returned by transports for a card that is not in its reader, or that was
// removed since the connection was made: as with PC/SC's SCARD_W_REMOVED_CARD, a quick
// re-insertion does not revive an old connection, so nobody mistakes a re-inserted card for one
// still logged in.
var ErrRemoved = errors.New("card removed")

// maxResponse bounds the data a host accepts through response chaining; a card that keeps
// answering 61xx beyond it, or answers 61xx without data, is broken or hostile.
const maxResponse = 1 << 20

// ErrChaining is returned when a card's response chaining does not converge.
var ErrChaining = errors.New("apdu: card's response chaining does not end")

// Exchange sends cmd and returns the complete response, doing what a PC/SC host does around a card:
//   - a short command with more than 255 data bytes is split into a chain of CLA|0x10 commands of at
//     most 255 bytes (an extended command is sent whole);
//   - 61xx is followed by GET RESPONSE until the card has sent everything;
//   - 6Cxx repeats the command with Le = xx.
//
// The returned Response carries the card's final status word; Exchange itself only fails on
// transport errors and malformed responses.
func Exchange(ctx context.Context, t Transport, cmd Command) (Response, error) {
	var rsp Response
	var err error
	if !cmd.Extended && len(cmd.Data) > MaxShortLc {
		rsp, err = sendChain(ctx, t, cmd)
	} else {
		rsp, err = send(ctx, t, cmd)
	}
	if err != nil {
		return rsp, err
	}
	if rsp.SW.SW1() == 0x6C {
		cmd.Ne = shortNe(rsp.SW.SW2())
		if rsp, err = send(ctx, t, cmd); err != nil {
			return rsp, err
		}
	}
	if rsp.SW.SW1() != 0x61 {
		return rsp, nil
	}
	data := append([]byte(nil), rsp.Data...)
	for rsp.SW.SW1() == 0x61 {
		if err := ctx.Err(); err != nil {
			return Response{}, err
		}
		get := Command{CLA: cmd.CLA &^ ClassChaining, INS: InsGetResponse, Ne: shortNe(rsp.SW.SW2())}
		if rsp, err = send(ctx, t, get); err != nil {
			return rsp, err
		}
		if len(rsp.Data) == 0 && rsp.SW.SW1() == 0x61 {
			return Response{}, fmt.Errorf("%w: 61xx without data", ErrChaining)
		}
		data = append(data, rsp.Data...)
		if len(data) > maxResponse {
			return Response{}, fmt.Errorf("%w: more than %d bytes", ErrChaining, maxResponse)
		}
	}
	rsp.Data = data
	return rsp, nil
}

func sendChain(ctx context.Context, t Transport, cmd Command) (Response, error) {
	data := cmd.Data
	for len(data) > MaxShortLc {
		link := cmd
		link.CLA |= ClassChaining
		link.Data = data[:MaxShortLc]
		link.Ne = 0
		rsp, err := send(ctx, t, link)
		if err != nil {
			return rsp, err
		}
		if !rsp.SW.OK() {
			return rsp, nil
		}
		data = data[MaxShortLc:]
	}
	cmd.Data = data
	return send(ctx, t, cmd)
}

func send(ctx context.Context, t Transport, cmd Command) (Response, error) {
	b, err := cmd.MarshalBinary()
	if err != nil {
		return Response{}, err
	}
	out, err := t.Transmit(ctx, b)
	if err != nil {
		return Response{}, err
	}
	return ParseResponse(out)
}
