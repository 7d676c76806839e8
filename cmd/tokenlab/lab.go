package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"tokenlab/lab"
)

func runLab(args []string, stdout io.Writer) error {
	return dispatch("lab", args,
		"usage: tokenlab lab run SCENARIO [--profile P]... [--json] [--html FILE] [--progress]\n"+
			"       tokenlab lab list\n       tokenlab lab check FILE...\n",
		subcommand{"run", func(a []string) error { return runLabRun(a, stdout, os.Stderr) }},
		subcommand{"list", func(a []string) error { return runLabList(a, stdout) }},
		subcommand{"check", func(a []string) error { return runLabCheck(a, stdout) }})
}

// profileList is a repeatable --profile flag.
type profileList []string

func (p *profileList) String() string     { return strings.Join(*p, ",") }
func (p *profileList) Set(v string) error { *p = append(*p, v); return nil }

// errViolated is the error of a run that broke a rule: the exit status is 1.
var errViolated = errors.New("a policy was violated")

func runLabRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lab run", "SCENARIO [--profile P]... [--json] [--html FILE] [--progress]")
	var profiles profileList
	fs.Var(&profiles, "profile", "profile to run under (repeatable; default: the scenario's profiles)")
	asJSON := fs.Bool("json", false, "write the runs as JSON instead of tables")
	html := fs.String("html", "", "also write an HTML report with a timeline of each run to `FILE`")
	progress := fs.Bool("progress", false, "print each step to stderr as it runs (the default when stderr is a terminal)")
	// Flags may follow the scenario.
	var pos []string
	for len(args) > 0 {
		rest, err := parse(fs, args, 1<<20)
		if err != nil {
			return err
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) != 1 {
		return usagef("want one scenario (a file, or a bundled name from tokenlab lab list), got %d", len(pos))
	}
	sc, err := lab.Load(pos[0])
	if err != nil {
		return err
	}
	if len(profiles) == 0 {
		profiles = sc.Profiles
	}
	if len(profiles) == 0 {
		return usagef("%s names no profiles: give --profile", sc.File)
	}
	opts := lab.Options{}
	if *progress || isTerminal(stderr) {
		opts.Progress = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var runs []*lab.Result
	for _, p := range profiles {
		r, err := lab.Run(ctx, sc, p, opts)
		if err != nil {
			return fmt.Errorf("%s under %s: %w", sc.Name, p, err)
		}
		runs = append(runs, r)
		if !*asJSON {
			if err := lab.WriteTable(stdout, r); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		if err := lab.WriteJSON(stdout, runs); err != nil {
			return err
		}
	}
	if *html != "" {
		if err := writeFileAtomic(*html, func(w io.Writer) error { return lab.WriteHTML(w, runs) }); err != nil {
			return err
		}
	}
	var failed, violated []string
	for _, r := range runs {
		if r.Failed() {
			failed = append(failed, r.Profile)
		}
		if r.Violated() {
			violated = append(violated, r.Profile)
		}
	}
	switch {
	case len(failed) > 0:
		return fmt.Errorf("steps failed under %s", strings.Join(failed, ", "))
	case len(violated) > 0:
		return fmt.Errorf("%w under %s", errViolated, strings.Join(violated, ", "))
	}
	return nil
}

func runLabList(args []string, stdout io.Writer) error {
	fs := newFlags("lab list", "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	scs, err := lab.Bundled()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tPROFILES\tRULES\tTITLE")
	for _, sc := range scs {
		rules := make([]string, len(sc.Rules))
		for i, r := range sc.Rules {
			rules[i] = r.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sc.Name, strings.Join(sc.Profiles, ","), strings.Join(rules, ", "), sc.Title)
	}
	return tw.Flush()
}

func runLabCheck(args []string, stdout io.Writer) error {
	fs := newFlags("lab check", "FILE...")
	files, err := parse(fs, args, 1<<20)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usagef("no scenario file given")
	}
	var errs []error
	for _, f := range files {
		sc, err := lab.Load(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: scenario %s, %d steps, %d rules: ok\n", f, sc.Name, len(sc.Steps), len(sc.Rules))
	}
	return errors.Join(errs...)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// writeFileAtomic writes a file through a temporary one beside it, so that a reader never sees
// half of it and a failure leaves the old one.
func writeFileAtomic(name string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
