// Command tokenlab is a hardware-token emulator and fuzz lab: a virtual YubiKey that real host
// software uses through pcscd, with the tools to drive, observe and measure it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand: its flags are parsed from args and it writes to stdout.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"card", "create and inspect a virtual card, remove it from its reader (init, status, remove, insert)", runCard},
		{"serve", "run a virtual card: into pcscd through vpcd, as PKCS#11, on a card socket, with an SSH server", runServe},
		{"demo", "show a virtual card end to end: keys, PIN policies, signatures", runDemo},
		{"ike", "IKEv2 responder (listen) and initiator (connect) with the card's key", runIKE},
		{"lab", "run PIN-policy scenarios and judge them (run, list, check)", runLab},
		{"profiles", "list the middleware's PIN-caching profiles and what each reproduces", runProfiles},
		{"ssh", "SSH with token keys, plain or RFC 6187 X.509: listen, connect, export", runSSH},
	}
}

// usageError is a mistake on the command line; main prints it with the usage hint and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// subcommandError names the subcommand ("card init") an error came from.
type subcommandError struct {
	name string
	err  error
}

func (e subcommandError) Error() string { return e.err.Error() }

// subcommand is one command of a group, such as init in `tokenlab card init`.
type subcommand struct {
	name string
	run  func(args []string) error
}

// dispatch runs the subcommand that args name in group; errors name the subcommand.
func dispatch(group string, args []string, help string, subs ...subcommand) error {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	want := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	if len(args) == 0 {
		return usagef("missing subcommand: %s", want)
	}
	for _, s := range subs {
		if s.name == args[0] {
			return inSubcommand(group+" "+s.name, s.run(args[1:]))
		}
	}
	switch args[0] {
	case "-h", "--help", "help":
		return helpError{help}
	}
	return usagef("unknown subcommand %q (want %s)", args[0], want)
}

func inSubcommand(name string, err error) error {
	if err == nil {
		return nil
	}
	return subcommandError{name, err}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(args[1:], stdout)
			name := c.name
			var sub subcommandError
			if errors.As(err, &sub) {
				name, err = sub.name, sub.err
			}
			var help helpError
			var status exitStatus
			switch {
			case err == nil:
				return 0
			case errors.As(err, &status):
				return int(status)
			case errors.As(err, &help):
				fmt.Fprint(stderr, help.text)
				return 0
			case errors.As(err, new(usageError)):
				fmt.Fprintf(stderr, "tokenlab %s: %v (see tokenlab %s -h)\n", name, err, name)
				return 2
			}
			fmt.Fprintf(stderr, "tokenlab %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "tokenlab: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tokenlab <command> [flags]")
	fmt.Fprintln(w)
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "run 'tokenlab <command> -h' for the flags of a command")
}

// newFlags returns a flag set that prints nothing itself: a parse error becomes a one-line usage
// error, and -h a helpError carrying the full usage.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("tokenlab "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tokenlab %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// helpError carries the usage text that -h asked for.
type helpError struct{ text string }

func (e helpError) Error() string { return e.text }

// parse parses flags and rejects positional arguments the command does not take.
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fs.SetOutput(&b)
			fs.Usage()
			fs.SetOutput(io.Discard)
			return nil, helpError{b.String()}
		}
		return nil, usageError{err.Error()}
	}
	if fs.NArg() > positional {
		return nil, usagef("unexpected argument %q", fs.Arg(positional))
	}
	return fs.Args(), nil
}

// requireFlag reports a missing mandatory flag.
func requireFlag(name, value string) error {
	if strings.TrimSpace(value) == "" {
		return usagef("--%s is required", name)
	}
	return nil
}
