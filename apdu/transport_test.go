package apdu

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// script is a card that answers from a list and records what it was sent.
type script struct {
	replies [][]byte
	sent    [][]byte
}

func (s *script) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	s.sent = append(s.sent, append([]byte(nil), cmd...))
	if len(s.replies) == 0 {
		return []byte{0x61, 0x00}, nil // a hostile card never stops
	}
	r := s.replies[0]
	s.replies = s.replies[1:]
	return r, nil
}

func TestExchangeResponseChaining(t *testing.T) {
	s := &script{replies: [][]byte{{1, 2, 0x61, 0x02}, {3, 4, 0x90, 0x00}}}
	rsp, err := Exchange(context.Background(), s, Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: []byte{0x5C, 0x01, 0x7E}})
	if err != nil || !bytes.Equal(rsp.Data, []byte{1, 2, 3, 4}) || !rsp.SW.OK() {
		t.Fatalf("Exchange = % X %v, %v", rsp.Data, rsp.SW, err)
	}
	if !bytes.Equal(s.sent[1], []byte{0x00, 0xC0, 0x00, 0x00, 0x02}) {
		t.Errorf("GET RESPONSE sent as % X", s.sent[1])
	}
}

func TestExchangeCommandChaining(t *testing.T) {
	s := &script{replies: [][]byte{{0x90, 0x00}, {0x90, 0x00}}}
	data := bytes.Repeat([]byte{0xAB}, 300)
	if _, err := Exchange(context.Background(), s, Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: data}); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 2 || s.sent[0][0] != 0x10 || s.sent[0][4] != 0xFF || s.sent[1][0] != 0x00 || s.sent[1][4] != 45 {
		t.Errorf("chain sent as %d APDUs: % X / % X", len(s.sent), s.sent[0][:5], s.sent[1][:5])
	}
}

func TestExchangeWrongLe(t *testing.T) {
	s := &script{replies: [][]byte{{0x6C, 0x03}, {1, 2, 3, 0x90, 0x00}}}
	rsp, err := Exchange(context.Background(), s, Command{INS: 0xFD, Ne: 256})
	if err != nil || len(rsp.Data) != 3 || !bytes.Equal(s.sent[1], []byte{0x00, 0xFD, 0x00, 0x00, 0x03}) {
		t.Errorf("6Cxx retry: %v, sent % X", err, s.sent)
	}
}

// A card that answers 61xx forever, or without data, must not hang the host.
func TestExchangeHostileChaining(t *testing.T) {
	s := &script{replies: [][]byte{{1, 0x61, 0x00}}}
	if _, err := Exchange(context.Background(), s, Command{INS: 0xCB}); !errors.Is(err, ErrChaining) {
		t.Errorf("61 00 without data: %v", err)
	}
	endless := &endlessCard{}
	if _, err := Exchange(context.Background(), endless, Command{INS: 0xCB}); !errors.Is(err, ErrChaining) {
		t.Errorf("endless data: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Exchange(ctx, &endlessCard{}, Command{INS: 0xCB}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

type endlessCard struct{}

func (endlessCard) Transmit(context.Context, []byte) ([]byte, error) {
	return append(make([]byte, 256), 0x61, 0x00), nil
}
