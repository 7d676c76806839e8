package cardsock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"

	"tokenlab/apdu"
	"tokenlab/internal/unixsock"
)

// Card is what the server needs of the card it serves; *emulator.Card has it.
type Card interface {
	Dial(ctx context.Context) (apdu.Transactor, error)
	Present() bool
	Removals() uint64
	// Changed returns a channel closed at the card's next removal or insertion.
	Changed() <-chan struct{}
}

// Server serves a card to the processes of its user.
type Server struct {
	Card Card
	Log  *slog.Logger // nil discards
}

// Serve accepts connections on ln until ctx ends. Each connection is one host connection to the
// card; a malformed message closes that connection only.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		cr, err := unixsock.Peer(c)
		if err != nil {
			log.Warn("card socket: refused a connection", "err", err)
			c.Close()
			continue
		}
		go func() {
			err := s.serve(ctx, c)
			if err != nil && !errors.Is(err, net.ErrClosed) {
				log.Info("card socket: connection closed", "pid", cr.PID, "reason", err)
			}
		}()
	}
}

// serve answers one connection. The connection has its own context, cancelled when the peer
// hangs up or the connection ends otherwise, so that a request still waiting for the card (a
// Begin behind another host's transaction) is abandoned with its host instead of taking the
// card for nobody.
func (s *Server) serve(ctx context.Context, c *net.UnixConn) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	// The client waits for each answer, so reading ahead sees nothing but a hang-up (or a
	// pipelined request, which waits its turn).
	reqs := make(chan []byte)
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			b, err := readMessage(c)
			if err != nil {
				cancel(err)
				return
			}
			select {
			case reqs <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(nil); c.Close(); <-read }()
	conn, err := s.Card.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for {
		var b []byte
		select {
		case b = <-reqs:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		req, err := parseRequest(b)
		if err != nil {
			writeMessage(c, statusError, []byte(err.Error()))
			return err
		}
		var out []byte
		switch req.op {
		case opTransmit:
			out, err = conn.Transmit(ctx, req.arg)
		case opBegin:
			err = conn.Begin(ctx)
		case opEnd:
			err = conn.End(apdu.Disposition(req.disp))
		case opStatus:
			out = s.status()
		case opWait:
			out, err = s.waitChange(ctx, req.arg)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		switch {
		case errors.Is(err, apdu.ErrRemoved):
			err = writeMessage(c, statusRemoved, nil)
		case err != nil:
			err = writeMessage(c, statusError, []byte(err.Error()))
		default:
			err = writeMessage(c, statusOK, out)
		}
		if err != nil {
			return err
		}
	}
}

// status is the card's presence and removal count as the status operation answers them.
func (s *Server) status() []byte {
	out := []byte{0}
	if s.Card.Present() {
		out[0] = 1
	}
	return binary.BigEndian.AppendUint64(out, s.Card.Removals())
}

// waitChange returns the card's status once it differs from seen, or ctx's error.
func (s *Server) waitChange(ctx context.Context, seen []byte) ([]byte, error) {
	for {
		ch := s.Card.Changed()
		if st := s.status(); !bytes.Equal(st, seen) {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
