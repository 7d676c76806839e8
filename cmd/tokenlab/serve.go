package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/vpcd"
	"tokenlab/emulator/yubikey"
)

func runServe(args []string, stdout io.Writer) error {
	fs := newFlags("serve", "--state DIR [--vpcd HOST:PORT] [--touch auto|refuse|DURATION] [-v]")
	dir := fs.String("state", "", "state directory of the card (tokenlab card init creates one)")
	addr := fs.String("vpcd", vpcd.DefaultAddr, "address of pcscd's vpcd reader driver")
	verbose := fs.Bool("v", false, "log every APDU (header, lengths and status word; never its data)")
	touchFlag := fs.String("touch", "auto", "how the emulated user answers touch requests: auto (at once), refuse, or a delay such as 2s")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		return usagef("--vpcd: %q is not HOST:PORT", *addr)
	}
	touch, err := parseTouch(*touchFlag)
	if err != nil {
		return usagef("--touch: %v", err)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	d, err := yubikey.Open(*dir, touch)
	if err != nil {
		return err
	}
	defer d.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("serving virtual YubiKey", "serial", d.Serial(), "firmware", d.Version().String(), "state", *dir, "vpcd", *addr)
	link := &vpcd.Link{Addr: *addr, Card: d.Card, Log: log}
	if err := link.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("vpcd: %w", err)
	}
	log.Info("stopped")
	return nil
}

// parseTouch turns --touch into the card's touch approver: "auto" touches at once, "refuse"
// never touches (the card answers 6985, as a YubiKey after its 15-second wait), and a duration
// touches after that long, unless the host gives up first.
func parseTouch(s string) (piv.TouchFunc, error) {
	switch s {
	case "auto":
		return nil, nil
	case "refuse":
		return func(context.Context, piv.Slot) error { return errors.New("touch refused") }, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("%q is not auto, refuse or a duration such as 2s", s)
	}
	return func(ctx context.Context, _ piv.Slot) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}
