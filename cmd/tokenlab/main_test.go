package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"tokenlab": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts pins the CLI's behaviour: output, exit codes and error messages
// (testdata/script/*.txtar).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"locked":   cmdLocked,
			"waitsock": cmdWaitSock,
		},
	})
}

// locked DIR waits up to 10 seconds until another process holds the state directory's lock.
func cmdLocked(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: locked DIR")
	}
	name := filepath.Join(ts.MkAbs(args[0]), "lock")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := os.OpenFile(name, os.O_RDWR, 0); err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil {
				unix.Flock(int(f.Fd()), unix.LOCK_UN)
			}
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("%s: nobody took the lock within 10s", name)
}

// waitsock PATH waits up to 10 seconds until PATH is a socket.
func cmdWaitSock(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: waitsock PATH")
	}
	name := ts.MkAbs(args[0])
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(name); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("%s: no socket within 10s", name)
}
