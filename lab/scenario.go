package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"tokenlab/middleware"
)

// Scenario is a parsed scenario file.
type Scenario struct {
	Name     string
	Title    string
	File     string   // where it came from, for messages
	Profiles []string // the profiles to run it under when none is given
	Rules    []Rule
	Steps    []Step
}

// Kind is how an application reaches the card.
type Kind string

// Connection kinds.
const (
	KindPKCS11 Kind = "pkcs11" // a PKCS#11 application over the p11-kit RPC protocol
	KindIKE    Kind = "ike"    // an IKEv2 tunnel, certificate authentication
	KindSSH    Kind = "ssh"    // an SSH login with the key as an RFC 6187 X.509 key
)

var kinds = []Kind{KindPKCS11, KindIKE, KindSSH}

// Op is what a step does.
type Op string

// Step operations.
const (
	OpStart      Op = "start"      // start KIND: the endpoint applications of that kind connect to
	OpConnect    Op = "connect"    // connect APP KIND [key SLOT]
	OpDisconnect Op = "disconnect" // disconnect APP: the connection ends, the application lives on
	OpSign       Op = "sign"       // sign APP SLOT: a signature in APP's connection
	OpQuit       Op = "quit"       // quit APP: the application ends
	OpRemove     Op = "remove"     // remove: the card leaves the reader
	OpInsert     Op = "insert"     // insert: the card comes back
	OpAdvance    Op = "advance"    // advance DURATION: time passes (a fake clock: no sleeping)
)

// Step is one line of a scenario's script.
type Step struct {
	Line     int
	Text     string // the line as written, without its comment
	Op       Op
	App      string
	Kind     Kind
	Slot     byte
	Duration time.Duration
}

// Rule is a policy a run is judged by.
type Rule struct {
	Name string
	Slot byte          // pin-every-signature: the key
	Idle time.Duration // reauth-after: the idle time after which a PIN is due again
	Line int
}

// Rule names.
const (
	RulePINEveryConnection  = "pin-every-connection"   // each connection asks for the PIN
	RulePINEverySignature   = "pin-every-signature"    // each signature with the slot's key asks for the PIN
	RuleNoReuseAfterRemoval = "no-reuse-after-removal" // after a removal, no key is used before the PIN is asked again
	RuleReauthAfter         = "reauth-after"           // after the idle time, the PIN is asked again (SP 800-63B §4.2.3)
)

// String names the rule as a scenario writes it.
func (r Rule) String() string {
	switch r.Name {
	case RulePINEverySignature:
		return fmt.Sprintf("%s %02x", r.Name, r.Slot)
	case RuleReauthAfter:
		return fmt.Sprintf("%s %s", r.Name, fmtDuration(r.Idle))
	}
	return r.Name
}

// ParseError is a problem in a scenario file, with its place.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Limits on a scenario file: it is read whole, and each step runs.
const (
	maxScenarioBytes = 1 << 20
	maxSteps         = 10000
	maxAdvance       = 366 * 24 * time.Hour
)

// Parse reads a scenario. file names it in errors. The format, line by line (# starts a
// comment; words are separated by blanks):
//
//	scenario NAME                 the scenario's name, first
//	title TEXT                    a line of description
//	profiles PROFILE...           the profiles to run it under by default
//	require RULE [ARG]            a rule to judge each run by: pin-every-connection,
//	                              pin-every-signature SLOT, no-reuse-after-removal,
//	                              reauth-after DURATION
//	start KIND                    start the endpoint of ike or ssh (pkcs11 needs none)
//	connect APP KIND [key SLOT]   APP connects (ike, ssh or pkcs11) with the key in SLOT (9a)
//	disconnect APP                the connection ends; the application lives on
//	sign APP SLOT                 APP signs with the key in SLOT in its connection
//	quit APP                      the application ends
//	remove | insert               the card leaves the reader, or comes back
//	advance DURATION              time passes (Go durations: 90s, 15m, 2h)
func Parse(file string, r io.Reader) (*Scenario, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxScenarioBytes+1))
	if err != nil {
		return nil, &ParseError{File: file, Msg: err.Error()}
	}
	if len(data) > maxScenarioBytes {
		return nil, &ParseError{File: file, Msg: fmt.Sprintf("larger than %d bytes", maxScenarioBytes)}
	}
	p := &parser{sc: &Scenario{File: file}, connected: map[string]Kind{}, apps: map[string]bool{}, started: map[Kind]bool{}, present: true}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), maxScenarioBytes)
	for line := 1; sc.Scan(); line++ {
		text := stripComment(sc.Text())
		if text == "" {
			continue
		}
		if err := p.line(line, text); err != nil {
			return nil, &ParseError{File: file, Line: line, Msg: err.Error()}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{File: file, Msg: err.Error()}
	}
	if p.sc.Name == "" {
		return nil, &ParseError{File: file, Msg: "no \"scenario NAME\" line"}
	}
	if len(p.sc.Steps) == 0 {
		return nil, &ParseError{File: file, Msg: "no steps"}
	}
	if len(p.sc.Rules) == 0 {
		return nil, &ParseError{File: file, Msg: "no \"require\" line: nothing to judge the run by"}
	}
	return p.sc, nil
}

type parser struct {
	sc        *Scenario
	connected map[string]Kind // applications with a connection open
	apps      map[string]bool // applications running
	started   map[Kind]bool
	present   bool // the card is in the reader
}

func (p *parser) line(n int, text string) error {
	w := strings.Fields(text)
	for _, f := range w {
		if !printable(f) {
			return fmt.Errorf("%q has a control or non-printable character", f)
		}
	}
	verb, args := w[0], w[1:]
	if verb != "scenario" && p.sc.Name == "" {
		return fmt.Errorf("%q before the \"scenario NAME\" line", verb)
	}
	switch verb {
	case "scenario":
		if p.sc.Name != "" {
			return errors.New("a second \"scenario\" line")
		}
		if len(args) != 1 || !isName(args[0]) {
			return errors.New("want \"scenario NAME\", a name of letters, digits, '-' and '_'")
		}
		p.sc.Name = args[0]
		return nil
	case "title":
		if len(args) == 0 {
			return errors.New("title: no text")
		}
		p.sc.Title = strings.Join(args, " ")
		return nil
	case "profiles":
		if len(args) == 0 {
			return errors.New("profiles: none named")
		}
		for _, a := range args {
			if _, err := middleware.ParsePolicy(a); err != nil {
				return fmt.Errorf("profiles: %v", err)
			}
			if slices.Contains(p.sc.Profiles, a) {
				return fmt.Errorf("profiles: %q twice", a)
			}
			p.sc.Profiles = append(p.sc.Profiles, a)
		}
		return nil
	case "require":
		return p.require(n, args)
	}
	if len(p.sc.Steps) >= maxSteps {
		return fmt.Errorf("more than %d steps", maxSteps)
	}
	st := Step{Line: n, Text: strings.Join(w, " "), Op: Op(verb)}
	if err := p.step(&st, args); err != nil {
		return err
	}
	p.sc.Steps = append(p.sc.Steps, st)
	return nil
}

func (p *parser) require(n int, args []string) error {
	if len(args) == 0 {
		return errors.New("require: no rule named")
	}
	r := Rule{Name: args[0], Line: n}
	switch r.Name {
	case RulePINEveryConnection, RuleNoReuseAfterRemoval:
		if len(args) != 1 {
			return fmt.Errorf("require %s takes no argument", r.Name)
		}
	case RulePINEverySignature:
		if len(args) != 2 {
			return fmt.Errorf("require %s takes a slot (9c)", r.Name)
		}
		s, err := parseSlot(args[1])
		if err != nil {
			return fmt.Errorf("require %s: %v", r.Name, err)
		}
		r.Slot = s
	case RuleReauthAfter:
		if len(args) != 2 {
			return fmt.Errorf("require %s takes a duration (15m)", r.Name)
		}
		d, err := parseDuration(args[1])
		if err != nil {
			return fmt.Errorf("require %s: %v", r.Name, err)
		}
		r.Idle = d
	default:
		return fmt.Errorf("require: unknown rule %q (known: %s, %s SLOT, %s, %s DURATION)", r.Name,
			RulePINEveryConnection, RulePINEverySignature, RuleNoReuseAfterRemoval, RuleReauthAfter)
	}
	for _, o := range p.sc.Rules {
		if o.String() == r.String() {
			return fmt.Errorf("require %s: already required on line %d", r, o.Line)
		}
	}
	p.sc.Rules = append(p.sc.Rules, r)
	return nil
}

func (p *parser) step(st *Step, args []string) error {
	want := func(n int, usage string) error {
		if len(args) != n {
			return fmt.Errorf("want %q", usage)
		}
		return nil
	}
	app := func() error {
		if !isName(args[0]) {
			return fmt.Errorf("%s: %q is not an application name (letters, digits, '-' and '_')", st.Op, args[0])
		}
		st.App = args[0]
		return nil
	}
	switch st.Op {
	case OpStart:
		if err := want(1, "start ike|ssh"); err != nil {
			return err
		}
		k, err := parseKind(args[0])
		if err != nil {
			return err
		}
		if k == KindPKCS11 {
			return errors.New("start: the PKCS#11 server needs no start; connect to it")
		}
		if p.started[k] {
			return fmt.Errorf("start: %s is already started", k)
		}
		p.started[k], st.Kind = true, k
	case OpConnect:
		if len(args) != 2 && len(args) != 4 {
			return errors.New(`want "connect APP ike|ssh|pkcs11 [key SLOT]"`)
		}
		if err := app(); err != nil {
			return err
		}
		k, err := parseKind(args[1])
		if err != nil {
			return err
		}
		if k != KindPKCS11 && !p.started[k] {
			return fmt.Errorf("connect: no %s endpoint; add \"start %s\" before", k, k)
		}
		if _, ok := p.connected[st.App]; ok {
			return fmt.Errorf("connect: %q is already connected; disconnect it first", st.App)
		}
		st.Kind, st.Slot = k, 0x9A
		if len(args) == 4 {
			if args[2] != "key" {
				return fmt.Errorf("connect: %q where \"key\" was expected", args[2])
			}
			if st.Slot, err = parseSlot(args[3]); err != nil {
				return fmt.Errorf("connect: %v", err)
			}
		}
		p.connected[st.App], p.apps[st.App] = k, true
	case OpDisconnect:
		if err := want(1, "disconnect APP"); err != nil {
			return err
		}
		if err := app(); err != nil {
			return err
		}
		if _, ok := p.connected[st.App]; !ok {
			return fmt.Errorf("disconnect: %q is not connected", st.App)
		}
		delete(p.connected, st.App)
	case OpSign:
		if err := want(2, "sign APP SLOT"); err != nil {
			return err
		}
		if err := app(); err != nil {
			return err
		}
		if _, ok := p.connected[st.App]; !ok {
			return fmt.Errorf("sign: %q is not connected", st.App)
		}
		s, err := parseSlot(args[1])
		if err != nil {
			return fmt.Errorf("sign: %v", err)
		}
		st.Slot = s
	case OpQuit:
		if err := want(1, "quit APP"); err != nil {
			return err
		}
		if err := app(); err != nil {
			return err
		}
		if !p.apps[st.App] {
			return fmt.Errorf("quit: no application %q is running", st.App)
		}
		delete(p.apps, st.App)
		delete(p.connected, st.App)
	case OpRemove, OpInsert:
		if err := want(0, string(st.Op)); err != nil {
			return err
		}
		if (st.Op == OpRemove) != p.present {
			return fmt.Errorf("%s: the card is already %s", st.Op, map[bool]string{true: "in the reader", false: "out of the reader"}[p.present])
		}
		p.present = st.Op == OpInsert
	case OpAdvance:
		if err := want(1, "advance DURATION"); err != nil {
			return err
		}
		d, err := parseDuration(args[0])
		if err != nil {
			return fmt.Errorf("advance: %v", err)
		}
		st.Duration = d
	default:
		return fmt.Errorf("unknown step %q (steps: start, connect, disconnect, sign, quit, remove, insert, advance)", st.Op)
	}
	if (st.Op == OpConnect || st.Op == OpSign) && !p.present {
		return fmt.Errorf("%s: the card is out of the reader; insert it first", st.Op)
	}
	return nil
}

// stripComment removes a comment: from a '#' that starts the line or follows a blank, to the
// end ("PKCS#11" in a title is no comment).
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			line = line[:i]
			break
		}
	}
	return strings.TrimSpace(line)
}

// fmtDuration writes a duration as a scenario would: 15m, 1h30m, 90s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func parseKind(s string) (Kind, error) {
	if k := Kind(s); slices.Contains(kinds, k) {
		return k, nil
	}
	return "", fmt.Errorf("unknown connection kind %q (ike, ssh or pkcs11)", s)
}

// parseSlot reads a PIV key slot: 9a, 9c, 9d, 9e, or a retired slot 82 to 95.
func parseSlot(s string) (byte, error) {
	v, err := strconv.ParseUint(s, 16, 8)
	if err != nil || len(s) != 2 || !(v >= 0x9A && v <= 0x9E && v != 0x9B || v >= 0x82 && v <= 0x95) {
		return 0, fmt.Errorf("%q is not a PIV key slot (9a, 9c, 9d, 9e, 82-95)", s)
	}
	return byte(v), nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxAdvance {
		return 0, fmt.Errorf("%q is not a duration between 1ns and %v (90s, 15m, 2h)", s, maxAdvance)
	}
	return d, nil
}

func isName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
