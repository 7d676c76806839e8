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

	"tokenlab/emulator/vpcd"
	"tokenlab/emulator/yubikey"
)

func runServe(args []string, stdout io.Writer) error {
	fs := newFlags("serve", "--state DIR [--vpcd HOST:PORT] [-v]")
	dir := fs.String("state", "", "state directory of the card (tokenlab card init creates one)")
	addr := fs.String("vpcd", vpcd.DefaultAddr, "address of pcscd's vpcd reader driver")
	verbose := fs.Bool("v", false, "log every APDU")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		return usagef("--vpcd: %q is not HOST:PORT", *addr)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	d, err := yubikey.Open(*dir, nil)
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
