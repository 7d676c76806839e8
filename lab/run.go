package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"tokenlab/middleware"
	"tokenlab/middleware/prompt"
	"tokenlab/pkcs11srv"
)

// Epoch is where the lab's fake clock starts.
var Epoch = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// Options configure a run.
type Options struct {
	// Progress receives a line per step as the run goes, or nothing when nil.
	Progress io.Writer
}

// Result is one run of a scenario under one profile.
type Result struct {
	Scenario   string             `json:"scenario"`
	Title      string             `json:"title,omitempty"`
	Profile    string             `json:"profile"`
	Reproduces string             `json:"reproduces"`
	Steps      []StepResult       `json:"steps"`
	Verdicts   []Verdict          `json:"verdicts"`
	Events     []middleware.Event `json:"-"`
}

// StepResult is what one step did.
type StepResult struct {
	Line       int           `json:"line"`
	Text       string        `json:"step"`
	App        string        `json:"application,omitempty"`
	At         time.Duration `json:"at_ns"` // fake time since the start
	Prompts    int           `json:"prompts"`
	Reuses     int           `json:"cached_reuses"` // a cached PIN presented, or the card found still verified
	Verifies   int           `json:"card_verifies"`
	Signatures int           `json:"signatures"`
	Err        string        `json:"error,omitempty"`
	Violations []string      `json:"violations,omitempty"`
	// First and End delimit the step's events in Result.Events.
	First, End int `json:"-"`
}

// Result says how the step went: "ok", or what went wrong.
func (s StepResult) Result() string {
	if s.Err != "" {
		return "error: " + s.Err
	}
	return "ok"
}

// Verdict is a rule's judgement of a run.
type Verdict struct {
	Rule  string `json:"rule"`
	OK    bool   `json:"ok"`
	Steps []int  `json:"violating_lines,omitempty"` // the scenario lines of the steps that broke it
}

// Violated reports whether a rule was broken.
func (r *Result) Violated() bool {
	for _, v := range r.Verdicts {
		if !v.OK {
			return true
		}
	}
	return false
}

// Failed reports whether a step could not do what it should.
func (r *Result) Failed() bool {
	for _, s := range r.Steps {
		if s.Err != "" {
			return true
		}
	}
	return false
}

// Run plays the scenario under a profile, on a fresh in-memory card, and judges it. profile is
// a policy specification (middleware.ParsePolicy): a profile's name, with knobs set over it as
// PROFILE+KNOB=VALUE.
func Run(ctx context.Context, sc *Scenario, profile string, opts Options) (*Result, error) {
	pol, err := middleware.ParsePolicy(profile)
	if err != nil {
		return nil, err
	}
	e, err := newEnv(ctx, pol)
	if err != nil {
		return nil, err
	}
	defer e.close()
	res := &Result{Scenario: sc.Name, Title: sc.Title, Profile: pol.Name, Reproduces: pol.Reproduces}
	for i, st := range sc.Steps {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "%s [%s] step %d/%d: %s\n", sc.Name, profile, i+1, len(sc.Steps), st.Text)
		}
		first := len(e.rec.Events())
		err := e.do(ctx, st)
		r := StepResult{Line: st.Line, Text: st.Text, App: st.App, At: e.clock.Now().Sub(Epoch), First: first}
		if err != nil {
			r.Err = err.Error()
		}
		res.Steps = append(res.Steps, r)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	res.Events = e.rec.Events()
	for i := range res.Steps {
		end := len(res.Events)
		if i+1 < len(res.Steps) {
			end = res.Steps[i+1].First
		}
		res.Steps[i].End = end
		count(&res.Steps[i], res.Events[res.Steps[i].First:end])
	}
	judge(res, sc)
	return res, nil
}

// count fills in a step's tallies from its events.
func count(s *StepResult, events []middleware.Event) {
	for _, ev := range events {
		switch ev.Kind {
		case middleware.EventPrompt:
			s.Prompts++
		case middleware.EventCacheReuse, middleware.EventCardVerified:
			s.Reuses++
		case middleware.EventVerify:
			s.Verifies++
		case middleware.EventSign:
			s.Signatures++
		}
	}
}

// env is the lab of one run: a card, a clock, the applications and the endpoints.
type env struct {
	card     *labCard
	clock    *middleware.FakeClock
	session  *middleware.LogonSession
	rec      *middleware.Recorder
	policy   middleware.Policy
	prompter prompt.Prompter
	p11      *pkcs11srv.Server

	apps      map[string]*application
	endpoints map[Kind]endpoint
}

// application is a running program of the scenario: its middleware instance lives as long as
// it does, across its connections.
type application struct {
	name  string
	token *middleware.Token // opened at its first IKE or SSH connection
	conn  connection
}

// connection is an application's connection to an endpoint.
type connection interface {
	// sign makes a signature with the key in slot inside the connection.
	sign(ctx context.Context, slot byte) error
	// close ends the connection as the application does when the person disconnects.
	close(ctx context.Context) error
}

// endpoint is a server applications connect to.
type endpoint interface {
	connect(ctx context.Context, e *env, app *application, slot byte) (connection, error)
	close() error
}

// starters make the endpoints of each kind; a kind without one cannot be started.
var starters = map[Kind]func(ctx context.Context, e *env) (endpoint, error){}

func newEnv(ctx context.Context, pol middleware.Policy) (*env, error) {
	clock := middleware.NewFakeClock(Epoch)
	card, err := newLabCard(ctx, Epoch)
	if err != nil {
		return nil, err
	}
	e := &env{
		card:    card,
		clock:   clock,
		session: middleware.NewLogonSession(),
		rec:     &middleware.Recorder{},
		policy:  pol,
		// The lab's person types the PIN whenever asked; the prompts are what the lab counts.
		prompter:  prompt.Func(func(context.Context, prompt.Request) ([]byte, error) { return []byte(labPIN), nil }),
		apps:      map[string]*application{},
		endpoints: map[Kind]endpoint{},
	}
	e.p11 = pkcs11srv.New(pkcs11srv.Config{
		Reader: card.dev.Card, Policy: pol, Prompter: e.prompter, Audit: e.rec, Clock: clock, Session: e.session,
	})
	return e, nil
}

// options are the middleware options of an application's token.
func (e *env) options(app string) middleware.Options {
	return middleware.Options{Application: app, Policy: e.policy, Prompter: e.prompter, Audit: e.rec, Clock: e.clock, Session: e.session}
}

// token returns the application's middleware instance, opening it at first use.
func (e *env) token(ctx context.Context, app *application) (*middleware.Token, error) {
	if app.token == nil {
		t, err := middleware.Open(ctx, e.card.dev.Card.Dial, e.options(app.name))
		if err != nil {
			return nil, err
		}
		app.token = t
	}
	return app.token, nil
}

func (e *env) do(ctx context.Context, st Step) error {
	switch st.Op {
	case OpStart:
		start, ok := starters[st.Kind]
		if !ok {
			return fmt.Errorf("this build has no %s endpoint", st.Kind)
		}
		ep, err := start(ctx, e)
		if err != nil {
			return fmt.Errorf("starting %s: %w", st.Kind, err)
		}
		e.endpoints[st.Kind] = ep
	case OpConnect:
		app := e.apps[st.App]
		if app == nil {
			app = &application{name: st.App}
			e.apps[st.App] = app
		}
		var c connection
		var err error
		if st.Kind == KindPKCS11 {
			c, err = connectPKCS11(ctx, e, app, st.Slot)
		} else {
			c, err = e.endpoints[st.Kind].connect(ctx, e, app, st.Slot)
		}
		if err != nil {
			return err
		}
		app.conn = c
	case OpDisconnect:
		app := e.apps[st.App]
		c := app.conn
		app.conn = nil
		return c.close(ctx)
	case OpSign:
		return e.apps[st.App].conn.sign(ctx, st.Slot)
	case OpQuit:
		app := e.apps[st.App]
		delete(e.apps, st.App)
		var errs []error
		if app.conn != nil {
			errs = append(errs, app.conn.close(ctx))
		}
		if app.token != nil {
			errs = append(errs, app.token.Close(ctx))
		}
		return errors.Join(errs...)
	case OpRemove:
		e.card.dev.Card.Remove()
		// Middleware that watches the reader reacts now; a PKCS#11 application learns of it
		// from its slot event.
		for _, name := range sortedKeys(e.apps) {
			if t := e.apps[name].token; t != nil {
				t.CardRemoved()
			}
		}
		return e.slotEvent(ctx)
	case OpInsert:
		e.card.dev.Card.Insert()
		return e.slotEvent(ctx)
	case OpAdvance:
		e.clock.Advance(st.Duration)
	default:
		return fmt.Errorf("unknown step %q", st.Op)
	}
	return nil
}

// slotEvent waits until every PKCS#11 application has seen the reader's event, so that what
// its server does about it belongs to this step.
func (e *env) slotEvent(ctx context.Context) error {
	for _, name := range sortedKeys(e.apps) {
		if w, ok := e.apps[name].conn.(interface{ slotEvent(context.Context) error }); ok {
			if err := w.slotEvent(ctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}

func (e *env) close() {
	ctx := context.Background()
	for _, name := range sortedKeys(e.apps) {
		app := e.apps[name]
		if app.conn != nil {
			app.conn.close(ctx)
		}
		if app.token != nil {
			app.token.Close(ctx)
		}
	}
	for _, k := range kinds {
		if ep := e.endpoints[k]; ep != nil {
			ep.close()
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// slotName is how events name a slot.
func slotName(s byte) string { return fmt.Sprintf("%02x", s) }
