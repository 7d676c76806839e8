package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tokenlab/emulator/yubikey"
	"tokenlab/internal/unixsock"
)

// The control socket of `tokenlab serve` lives in the card's state directory (mode 0700) as
// controlSocket, 0600, peers of other users refused; `tokenlab card remove|insert` use it to take
// the served card out of its reader and put it back, as a hand does with a USB token.
//
// A request is one line, "remove", "insert" or "status"; the answer one line, "ok PRESENT
// REMOVALS SERIAL PIN PUK" (PRESENT is present or absent; PIN and PUK the tries left on the card,
// which the state directory may not have yet, see piv.Applet.Flush) or "error TEXT".
const controlSocket = "control.sock"

// Bounds of the control protocol.
const (
	maxControlLine = 64
	controlTimeout = 5 * time.Second
)

// cardControl is the card's state as the control socket reports it.
type cardControl struct {
	present  bool
	removals uint64
	serial   uint32
	pin, puk int
}

// controlServer answers the control socket for a served card.
type controlServer struct {
	dev *yubikey.Device
	log *slog.Logger
}

// serve accepts connections on ln until ctx ends.
func (s *controlServer) serve(ctx context.Context, ln *net.UnixListener) error {
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
		if _, err := unixsock.Peer(c); err != nil {
			s.log.Warn("control socket: refused a connection", "err", err)
			c.Close()
			continue
		}
		go s.answer(c)
	}
}

// answer reads one request from c, carries it out and answers it.
func (s *controlServer) answer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(controlTimeout))
	line, err := bufio.NewReaderSize(c, maxControlLine).ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			fmt.Fprintf(c, "error request longer than %d bytes\n", maxControlLine)
		}
		return
	}
	card := s.dev.Card
	switch op := strings.TrimSpace(string(line)); op {
	case "remove":
		if card.Present() {
			card.Remove()
			s.log.Info("card removed from its reader (tokenlab card remove)")
		}
	case "insert":
		if !card.Present() {
			card.Insert()
			s.log.Info("card inserted into its reader (tokenlab card insert)")
		}
	case "status":
	default:
		fmt.Fprintf(c, "error unknown request %q (remove, insert or status)\n", op)
		return
	}
	present := "absent"
	if card.Present() {
		present = "present"
	}
	st := s.dev.Status()
	fmt.Fprintf(c, "ok %s %d %d %d %d\n", present, card.Removals(), s.dev.Serial(), st.PINRetries, st.PUKRetries)
}

// controlCard sends op to the `tokenlab serve` that runs the card of state directory dir.
func controlCard(ctx context.Context, dir, op string) (cardControl, error) {
	path := filepath.Join(dir, controlSocket)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return cardControl{}, fmt.Errorf("no tokenlab serve runs the card in %s (%s: %v)", dir, path, errors.Unwrap(err))
		}
		return cardControl{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(controlTimeout))
	if _, err := io.WriteString(c, op+"\n"); err != nil {
		return cardControl{}, err
	}
	line, err := bufio.NewReaderSize(c, maxControlLine).ReadSlice('\n')
	if err != nil {
		return cardControl{}, fmt.Errorf("%s: no answer: %w", path, err)
	}
	return parseControlAnswer(string(line))
}

// parseControlAnswer parses "ok PRESENT REMOVALS SERIAL PIN PUK" or "error TEXT".
func parseControlAnswer(line string) (cardControl, error) {
	line = strings.TrimSuffix(line, "\n")
	if text, ok := strings.CutPrefix(line, "error "); ok {
		return cardControl{}, errors.New(text)
	}
	f := strings.Fields(line)
	if len(f) != 6 || f[0] != "ok" || (f[1] != "present" && f[1] != "absent") {
		return cardControl{}, fmt.Errorf("malformed answer %q from tokenlab serve", line)
	}
	removals, err1 := strconv.ParseUint(f[2], 10, 64)
	serial, err2 := strconv.ParseUint(f[3], 10, 32)
	pin, err3 := strconv.ParseUint(f[4], 10, 8)
	puk, err4 := strconv.ParseUint(f[5], 10, 8)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return cardControl{}, fmt.Errorf("malformed answer %q from tokenlab serve", line)
	}
	return cardControl{present: f[1] == "present", removals: removals, serial: uint32(serial), pin: int(pin), puk: int(puk)}, nil
}

// runCardReader is `tokenlab card remove` and `tokenlab card insert`.
func runCardReader(op string, args []string, stdout io.Writer) error {
	fs := newFlags("card "+op, "--state DIR")
	dir := fs.String("state", "", "state directory of the card that tokenlab serve runs")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	before, err := controlCard(ctx, *dir, "status")
	if err != nil {
		return err
	}
	after, err := controlCard(ctx, *dir, op)
	if err != nil {
		return err
	}
	switch {
	case op == "remove" && !before.present:
		fmt.Fprintf(stdout, "card %d was already out of its reader\n", after.serial)
	case op == "remove":
		fmt.Fprintf(stdout, "card %d removed from its reader\n", after.serial)
	case op == "insert" && before.present:
		fmt.Fprintf(stdout, "card %d was already in its reader\n", after.serial)
	default:
		fmt.Fprintf(stdout, "card %d inserted into its reader\n", after.serial)
	}
	return nil
}
