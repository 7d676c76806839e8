// Package pkcs11srv is PKCS#11 over the middleware: slots, sessions, login, objects and
// mechanisms for the daemon's card, served to applications over the p11-kit RPC protocol.
package pkcs11srv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"tokenlab/apdu"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
	"tokenlab/pkcs11srv/p11rpc"
)

// Reader is the card slot a server exposes: a way to connect, and the card's presence.
// *emulator.Card provides all of it (through a small adapter for Dial).
type Reader interface {
	Dial(ctx context.Context) (apdu.Transactor, error)
	Present() bool
	// Changed returns a channel closed at the next removal or insertion.
	Changed() <-chan struct{}
	// Removals counts removals, so that a quick re-insertion is noticed too.
	Removals() uint64
}

// Config configures a Server.
type Config struct {
	Reader Reader
	Policy middleware.Policy
	// Prompter is the middleware's PIN dialog. With one, the token announces a protected
	// authentication path and C_Login without a PIN asks through it.
	Prompter prompt.Prompter
	Audit    middleware.Audit
	Clock    middleware.Clock
	// Session is the logon session the applications share (single logon); nil makes one.
	Session *middleware.LogonSession
	Log     *slog.Logger
}

// Server holds what the applications of one daemon share.
type Server struct {
	cfg Config
}

// New returns a server.
func New(cfg Config) *Server {
	if cfg.Session == nil {
		cfg.Session = middleware.NewLogonSession()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = middleware.AuditFunc(func(middleware.Event) {})
	}
	return &Server{cfg: cfg}
}

// slotID is the only slot's id.
const slotID = 0

// App is one application's PKCS#11 state: what a process gets from C_Initialize to
// C_Finalize. Its methods are safe for concurrent use.
type App struct {
	srv  *Server
	name string

	mu          sync.Mutex
	initialized bool
	token       *middleware.Token // opened at the first session, nil after a removal
	removals    uint64            // the reader's removal count when token was opened
	objects     []*object         // the card's
	sessionObjs []*object         // derived keys, until their session closes
	nextObject  uint64            // counts session objects, for their handles
	sessions    map[uint64]*session
	nextHandle  uint64
	user        int           // ckuUser or ckuSO when logged in, -1 otherwise
	soKey       []byte        // the management key of a security officer's login
	loginPIN    []byte        // the PIN of C_Login(CKU_USER), good for one PIN-always operation (OpenSSH)
	loginPINAt  time.Time     // when loginPIN was given
	loginGen    uint32        // counts logouts: part of private object handles
	eventCh     chan struct{} // closed when the watcher records a slot event
	event       bool          // a slot event not yet reported by C_WaitForSlotEvent
	watchStop   chan struct{}
	finalized   chan struct{}
}

// session is one PKCS#11 session of an application.
type session struct {
	handle uint64
	rw     bool
	find   []uint64 // remaining results of C_FindObjects, nil when no search is active
	op     *operation
}

// NewApp returns the state of a new application (one RPC connection). name appears in prompts
// and audit events.
func (s *Server) NewApp(name string) *App {
	return &App{srv: s, name: name, sessions: map[uint64]*session{}, nextHandle: 1, user: -1}
}

func (a *App) check() error {
	if !a.initialized {
		return RV(ckrCryptokiNotInitialized)
	}
	return nil
}

// Initialize is C_Initialize.
func (a *App) Initialize() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.initialized {
		return RV(ckrCryptokiAlreadyInitialized)
	}
	a.initialized = true
	a.event = false // events before this C_Initialize are not this run's
	a.finalized = make(chan struct{})
	a.watchStop = make(chan struct{})
	a.eventCh = make(chan struct{})
	// Subscribe before returning: a removal right after C_Initialize must not be missed.
	go a.watch(a.watchStop, a.srv.cfg.Reader.Changed())
	return nil
}

// watch sets the application's slot event flag at each insertion and removal, and closes its
// sessions when the card goes (PKCS #11 §5.2: removal closes every session of every application).
func (a *App) watch(stop chan struct{}, ch <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-ch:
		}
		ch = a.srv.cfg.Reader.Changed()
		a.mu.Lock()
		select {
		case <-stop: // finalized while this event came: it belongs to no run of the application
			a.mu.Unlock()
			return
		default:
		}
		a.event = true
		close(a.eventCh) // wake the application's C_WaitForSlotEvent, after the flag is set
		a.eventCh = make(chan struct{})
		if a.token != nil && (!a.srv.cfg.Reader.Present() || a.srv.cfg.Reader.Removals() != a.removals) {
			a.token.CardRemoved() // the policy's removal reaction (caches cleared or kept) comes first
			a.closeToken(context.Background(), "card removed")
		}
		a.mu.Unlock()
	}
}

// Finalize is C_Finalize: the application ends, with its sessions and login.
func (a *App) Finalize(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.check(); err != nil {
		return err
	}
	a.closeToken(ctx, "application finished")
	a.initialized = false
	close(a.watchStop)
	close(a.finalized)
	return nil
}

// Close ends the application when its connection goes, finalized or not.
func (a *App) Close(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.initialized {
		a.closeToken(ctx, "application gone")
		a.initialized = false
		close(a.watchStop)
		close(a.finalized)
	}
}

// closeToken ends the middleware token as its policy says (after a removal, the middleware
// records the removal and its policy) and drops every session.
func (a *App) closeToken(ctx context.Context, why string) {
	if a.token != nil {
		if err := a.token.Close(ctx); err != nil {
			a.srv.cfg.Log.Debug("closing token", "app", a.name, "why", why, "err", err)
		}
	}
	a.resetLogin()
	a.token, a.objects = nil, nil
	a.dropSessionObjects(func(*object) bool { return true })
	clear(a.sessions)
}

func (a *App) resetLogin() {
	if a.user >= 0 {
		a.loginGen++
		a.objects = nil
		// Handles of private objects die with the login (C_Logout), session objects' too.
		a.dropSessionObjects(func(o *object) bool { return o.private })
	}
	a.user = -1
	clear(a.soKey)
	clear(a.loginPIN)
	a.soKey, a.loginPIN = nil, nil
}

// clock is the server's time source.
func (a *App) clock() middleware.Clock {
	if c := a.srv.cfg.Clock; c != nil {
		return c
	}
	return middleware.SystemClock
}

// tokenFor opens the application's middleware token on first use.
func (a *App) tokenFor(ctx context.Context) (*middleware.Token, error) {
	if !a.srv.cfg.Reader.Present() {
		return nil, RV(ckrTokenNotPresent)
	}
	if a.token != nil {
		return a.token, nil
	}
	c := a.srv.cfg
	removals := c.Reader.Removals()
	t, err := middleware.Open(ctx, c.Reader.Dial, middleware.Options{
		Application: a.name, Policy: c.Policy, Prompter: c.Prompter, Audit: c.Audit, Clock: c.Clock, Session: c.Session,
	})
	if err != nil {
		if errors.Is(err, apdu.ErrRemoved) {
			return nil, RV(ckrTokenNotPresent)
		}
		return nil, fmt.Errorf("%w: %v", RV(ckrDeviceError), err)
	}
	a.token, a.removals = t, removals
	return t, nil
}

// loadObjects reads the card's keys into objects.
func (a *App) loadObjects(ctx context.Context) error {
	if a.objects != nil {
		return nil
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return err
	}
	keys, err := t.Keys(ctx)
	if err != nil {
		return a.cardError(err)
	}
	a.objects = objectsFor(keys, a.srv.cfg.Policy, a.loginGen)
	return nil
}

// cardError maps a middleware or card error to a return value, reacting to a removal.
func (a *App) cardError(err error) error {
	var ae *pivclient.AuthError
	var r RV
	switch {
	case err == nil:
		return nil
	case errors.As(err, &r):
		return r
	case errors.Is(err, apdu.ErrRemoved):
		a.closeToken(context.Background(), "card removed")
		return RV(ckrDeviceRemoved)
	case errors.As(err, &ae):
		if ae.Retries == 0 {
			return RV(ckrPINLocked)
		}
		return RV(ckrPINIncorrect)
	case errors.Is(err, apdu.ErrBlocked):
		return RV(ckrPINLocked)
	case errors.Is(err, middleware.ErrPINRequired), errors.Is(err, apdu.ErrSecurityStatus):
		if a.user == ckuUser && a.token != nil && !a.token.LoggedIn() {
			// The middleware ended the login (its policy's idle time) and nobody could
			// log it in again: the application is logged out, and C_Login works again.
			a.endLogin()
		}
		return RV(ckrUserNotLoggedIn)
	case errors.Is(err, prompt.ErrCancelled):
		return RV(ckrFunctionCanceled)
	case errors.Is(err, middleware.ErrManagementKey):
		return RV(ckrPINIncorrect)
	case errors.Is(err, apdu.ErrConditions):
		return RV(ckrFunctionRejected)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return RV(ckrFunctionCanceled)
	}
	return fmt.Errorf("%w: %v", RV(ckrDeviceError), err)
}

const ckrFunctionRejected = 0x200

// Info is CK_INFO.
type Info struct {
	Manufacturer, Description string
	Major, Minor              byte // library version
}

// GetInfo is C_GetInfo.
func (a *App) GetInfo() (Info, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Info{Manufacturer: "tokenlab", Description: "tokenlab PKCS#11 over the middleware", Major: 0, Minor: 1}, a.check()
}

// GetSlotList is C_GetSlotList.
func (a *App) GetSlotList(tokenPresent bool) ([]uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.check(); err != nil {
		return nil, err
	}
	if tokenPresent && !a.srv.cfg.Reader.Present() {
		return []uint64{}, nil
	}
	return []uint64{slotID}, nil
}

// SlotInfo is CK_SLOT_INFO.
type SlotInfo struct {
	Description, Manufacturer string
	Flags                     uint64
}

// GetSlotInfo is C_GetSlotInfo.
func (a *App) GetSlotInfo(slot uint64) (SlotInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.checkSlot(slot); err != nil {
		return SlotInfo{}, err
	}
	flags := uint64(ckfRemovableDevice | ckfHWSlot)
	if a.srv.cfg.Reader.Present() {
		flags |= ckfTokenPresent
	}
	return SlotInfo{Description: "tokenlab virtual YubiKey", Manufacturer: "tokenlab", Flags: flags}, nil
}

func (a *App) checkSlot(slot uint64) error {
	if err := a.check(); err != nil {
		return err
	}
	if slot != slotID {
		return RV(ckrSlotIDInvalid)
	}
	return nil
}

// TokenInfo is CK_TOKEN_INFO.
type TokenInfo struct {
	Label, Manufacturer, Model, Serial string
	Flags                              uint64
	MaxSessions, Sessions              uint64
	MaxRWSessions, RWSessions          uint64
	MaxPINLen, MinPINLen               uint64
	HardwareMajor, HardwareMinor       byte
	FirmwareMajor, FirmwareMinor       byte
}

// GetTokenInfo is C_GetTokenInfo. The PIN flags come from the card's counter
// (CKF_USER_PIN_COUNT_LOW below the maximum, FINAL_TRY at one, LOCKED at zero).
func (a *App) GetTokenInfo(ctx context.Context, slot uint64) (TokenInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.checkSlot(slot); err != nil {
		return TokenInfo{}, err
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return TokenInfo{}, err
	}
	info, err := t.Info(ctx)
	if err != nil {
		return TokenInfo{}, a.cardError(err)
	}
	flags := uint64(ckfRNG | ckfLoginRequired | ckfUserPINInit | ckfTokenInitialized)
	if a.srv.cfg.Prompter != nil {
		flags |= ckfProtectedAuth
	}
	switch {
	case info.PINRetries == 0:
		flags |= ckfUserPINLocked
	case info.PINRetries == 1:
		flags |= ckfUserPINFinalTry | ckfUserPINCountLow
	case info.PINRetries > 0 && info.PINRetries < info.PINMaxRetries:
		flags |= ckfUserPINCountLow
	}
	var rw uint64
	for _, s := range a.sessions {
		if s.rw {
			rw++
		}
	}
	return TokenInfo{
		Label:         fmt.Sprintf("YubiKey PIV #%d", info.Serial),
		Manufacturer:  "tokenlab",
		Model:         "YubiKey 5",
		Serial:        fmt.Sprint(info.Serial),
		Flags:         flags,
		MaxSessions:   ckUnavailable - 1, // CK_EFFECTIVELY_INFINITE is 0; say "many"
		Sessions:      uint64(len(a.sessions)),
		MaxRWSessions: ckUnavailable - 1,
		RWSessions:    rw,
		MaxPINLen:     maxPINLen,
		MinPINLen:     minPINLen,
		HardwareMajor: 5, HardwareMinor: 0,
		FirmwareMajor: info.Version[0], FirmwareMinor: info.Version[1]*10 + info.Version[2],
	}, nil
}

// OpenSession is C_OpenSession.
func (a *App) OpenSession(ctx context.Context, slot, flags uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.checkSlot(slot); err != nil {
		return 0, err
	}
	if flags&ckfSerialSession == 0 {
		return 0, RV(ckrSessionParallelNotSupported)
	}
	if _, err := a.tokenFor(ctx); err != nil {
		return 0, err
	}
	rw := flags&ckfRWSession != 0
	if !rw && a.user == ckuSO {
		return 0, RV(ckrSessionReadWriteSOExists)
	}
	h := a.nextHandle
	a.nextHandle++
	a.sessions[h] = &session{handle: h, rw: rw}
	return h, nil
}

func (a *App) session(h uint64) (*session, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	s, ok := a.sessions[h]
	if !ok {
		return nil, RV(ckrSessionHandleInvalid)
	}
	return s, nil
}

// CloseSession is C_CloseSession. Closing the last session ends the application's login.
func (a *App) CloseSession(ctx context.Context, h uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return err
	}
	delete(a.sessions, h)
	a.dropSessionObjects(func(o *object) bool { return o.session == h })
	if len(a.sessions) == 0 {
		a.lastSessionClosed(ctx)
	}
	return nil
}

// CloseAllSessions is C_CloseAllSessions.
func (a *App) CloseAllSessions(ctx context.Context, slot uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.checkSlot(slot); err != nil {
		return err
	}
	clear(a.sessions)
	a.dropSessionObjects(func(*object) bool { return true })
	a.lastSessionClosed(ctx)
	return nil
}

// lastSessionClosed returns the application to the public state (PKCS #11 §5.6, C_CloseSession).
func (a *App) lastSessionClosed(ctx context.Context) {
	if a.user >= 0 && a.token != nil {
		a.token.Logout(ctx)
	}
	a.resetLogin()
}

// SessionInfo is CK_SESSION_INFO.
type SessionInfo struct {
	Slot, State, Flags, DeviceError uint64
}

// GetSessionInfo is C_GetSessionInfo.
func (a *App) GetSessionInfo(h uint64) (SessionInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return SessionInfo{}, err
	}
	info := SessionInfo{Slot: slotID, Flags: ckfSerialSession}
	if s.rw {
		info.Flags |= ckfRWSession
	}
	switch {
	case a.user == ckuSO:
		info.State = cksRWSO
	case a.user == ckuUser && s.rw:
		info.State = cksRWUser
	case a.user == ckuUser:
		info.State = cksROUser
	case s.rw:
		info.State = cksRWPublic
	default:
		info.State = cksROPublic
	}
	return info, nil
}

// Login is C_Login. pin nil means the protected authentication path: the middleware asks.
//   - CKU_USER logs the application in (all its sessions), once: CKR_USER_ALREADY_LOGGED_IN
//     after that.
//   - CKU_SO takes the card management key (hex, 32 to 64 digits) and needs no R/O session open.
//   - CKU_CONTEXT_SPECIFIC gives the PIN for the operation just started with a PIN-always key.
func (a *App) Login(ctx context.Context, h, userType uint64, pin []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return err
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return err
	}
	switch userType {
	case ckuUser:
		switch a.user {
		case ckuUser:
			return RV(ckrUserAlreadyLoggedIn)
		case ckuSO:
			return RV(ckrUserAnotherAlreadyLoggedIn)
		}
		if pin != nil && !pinLenOK(pin) {
			return RV(ckrPINLenRange)
		}
		if err := t.Login(ctx, pin); err != nil {
			return a.loginError(err)
		}
		a.user = ckuUser
		if pin != nil {
			a.loginPIN, a.loginPINAt = append([]byte(nil), pin...), a.clock().Now()
		}
		a.objects = nil // private objects appear
		return nil
	case ckuSO:
		switch a.user {
		case ckuSO:
			return RV(ckrUserAlreadyLoggedIn)
		case ckuUser:
			return RV(ckrUserAnotherAlreadyLoggedIn)
		}
		for _, o := range a.sessions {
			if !o.rw {
				return RV(ckrSessionReadOnlyExists)
			}
		}
		if pin == nil {
			return RV(ckrArgumentsBad)
		}
		key, err := hexKey(pin)
		if err != nil {
			return RV(ckrPINIncorrect)
		}
		if err := t.CheckManagementKey(ctx, key); err != nil {
			return a.cardError(err)
		}
		a.user, a.soKey = ckuSO, key
		return nil
	case ckuContextSpecific:
		op := s.op
		if op == nil || !op.alwaysAuth {
			return RV(ckrOperationNotInitialized)
		}
		if a.user != ckuUser {
			return RV(ckrUserNotLoggedIn)
		}
		if pin != nil && !pinLenOK(pin) {
			return RV(ckrPINLenRange)
		}
		got, err := t.ContextLogin(ctx, op.key.Slot, pin)
		if err != nil {
			return a.loginError(err)
		}
		clear(op.pin)
		op.pin = got
		return nil
	}
	return RV(ckrUserTypeInvalid)
}

// pinLenOK reports whether a PIN has a length the token accepts (its MinPINLen to MaxPINLen):
// one that does not is refused before the card sees it, and costs no try.
func pinLenOK(pin []byte) bool { return len(pin) >= minPINLen && len(pin) <= maxPINLen }

// The PIN lengths of a YubiKey's PIV application.
const minPINLen, maxPINLen = 6, 8

// loginError maps a failed login: a locked PIN also logs the application out.
func (a *App) loginError(err error) error {
	r := a.cardError(err)
	if r == RV(ckrPINLocked) && a.user >= 0 {
		a.logout(context.Background())
	}
	return r
}

// Logout is C_Logout: every session returns to public, active operations end, and the token
// does at logout what its policy does at disconnect.
func (a *App) Logout(ctx context.Context, h uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return err
	}
	if a.user < 0 {
		return RV(ckrUserNotLoggedIn)
	}
	return a.logout(ctx)
}

// logout ends the application's login: searches and private-key operations end, and the
// middleware logs out.
func (a *App) logout(ctx context.Context) error {
	a.endLogin()
	if a.token != nil {
		if err := a.token.Logout(ctx); err != nil {
			return a.cardError(err)
		}
	}
	return nil
}

// endLogin returns every session to public: searches and private-key operations end.
func (a *App) endLogin() {
	for _, s := range a.sessions {
		s.find = nil
		if s.op != nil && s.op.kind != opDigest && s.op.kind != opVerify {
			s.op.loggedOut = true // the next call on it answers CKR_USER_NOT_LOGGED_IN
			clear(s.op.pin)
			s.op.pin = nil
		}
	}
	a.resetLogin()
}

// visible returns the objects the application may see now.
func (a *App) visible(ctx context.Context) ([]*object, error) {
	if err := a.loadObjects(ctx); err != nil {
		return nil, err
	}
	var out []*object
	for _, o := range slices.Concat(a.objects, a.sessionObjs) {
		if !o.private || a.user == ckuUser {
			out = append(out, o)
		}
	}
	return out, nil
}

func (a *App) object(ctx context.Context, h uint64) (*object, error) {
	objs, err := a.visible(ctx)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.handle == h {
			return o, nil
		}
	}
	return nil, RV(ckrObjectHandleInvalid)
}

// Attribute is an attribute of a template, with its value as C memory holds it (the wire
// codec's type).
type Attribute = p11rpc.Attribute

// FindObjectsInit is C_FindObjectsInit.
func (a *App) FindObjectsInit(ctx context.Context, h uint64, template []Attribute) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return err
	}
	if s.find != nil {
		return RV(ckrOperationActive)
	}
	objs, err := a.visible(ctx)
	if err != nil {
		return err
	}
	s.find = []uint64{}
	for _, o := range objs {
		if o.matches(template) {
			s.find = append(s.find, o.handle)
		}
	}
	sort.Slice(s.find, func(i, j int) bool { return s.find[i] < s.find[j] })
	return nil
}

// FindObjects is C_FindObjects.
func (a *App) FindObjects(h uint64, max int) ([]uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return nil, err
	}
	if s.find == nil {
		return nil, RV(ckrOperationNotInitialized)
	}
	n := min(max, len(s.find))
	out := append([]uint64{}, s.find[:n]...)
	s.find = s.find[n:]
	return out, nil
}

// FindObjectsFinal is C_FindObjectsFinal.
func (a *App) FindObjectsFinal(h uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return err
	}
	if s.find == nil {
		return RV(ckrOperationNotInitialized)
	}
	s.find = nil
	return nil
}

// AttributeResult answers one AttributeRequest.
type AttributeResult struct {
	Type uint32
	// Status is CKR_OK (Value, or only Length when the capacity was 0),
	// CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID or CKR_BUFFER_TOO_SMALL.
	Status uint64
	Value  []byte
	Length int
}

// GetAttributeValue is C_GetAttributeValue. It answers every request in order; the overall
// result is the last non-OK status (PKCS #11 §5.7).
func (a *App) GetAttributeValue(ctx context.Context, h, obj uint64, reqs []AttributeRequest) ([]AttributeResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return nil, err
	}
	o, err := a.object(ctx, obj)
	if err != nil {
		return nil, err
	}
	out := make([]AttributeResult, len(reqs))
	var overall error
	for i, r := range reqs {
		res := AttributeResult{Type: r.Type}
		v, ok := o.attrs[r.Type]
		switch {
		case o.sensitive[r.Type]:
			res.Status = ckrAttributeSensitive
		case !ok:
			res.Status = ckrAttributeTypeInvalid
		case r.Capacity == 0:
			res.Length = len(v)
		case int(r.Capacity) < len(v):
			res.Status, res.Length = ckrBufferTooSmall, len(v)
		default:
			res.Value, res.Length = v, len(v)
		}
		if res.Status != ckrOK {
			overall = RV(res.Status)
		}
		out[i] = res
	}
	return out, overall
}

// WaitForSlotEvent is C_WaitForSlotEvent: with CKF_DONT_BLOCK it answers at once
// (CKR_NO_EVENT when nothing happened); otherwise it waits for an insertion or removal, or for
// C_Finalize (CKR_CRYPTOKI_NOT_INITIALIZED). It holds no lock while it waits, so the
// application's other calls go on.
func (a *App) WaitForSlotEvent(ctx context.Context, flags uint64) (uint64, error) {
	for {
		a.mu.Lock()
		if err := a.check(); err != nil {
			a.mu.Unlock()
			return 0, err
		}
		if a.event {
			a.event = false
			a.mu.Unlock()
			return slotID, nil
		}
		if flags&ckfDontBlock != 0 {
			a.mu.Unlock()
			return 0, RV(ckrNoEvent)
		}
		changed, finalized := a.eventCh, a.finalized
		a.mu.Unlock()
		select {
		case <-changed:
		case <-finalized:
			return 0, RV(ckrCryptokiNotInitialized)
		case <-ctx.Done():
			return 0, RV(ckrFunctionCanceled)
		}
	}
}

// SetPIN is C_SetPIN: a logged-in user (or anyone with the old PIN) changes the PIN.
func (a *App) SetPIN(ctx context.Context, h uint64, old, next []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return err
	}
	if !s.rw {
		return RV(ckrSessionReadOnly)
	}
	if old == nil || next == nil {
		return RV(ckrArgumentsBad)
	}
	if !pinLenOK(old) || !pinLenOK(next) {
		return RV(ckrPINLenRange)
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return err
	}
	return a.loginError(t.ChangePIN(ctx, old, next))
}

// GenerateRandom is C_GenerateRandom, from the card.
func (a *App) GenerateRandom(ctx context.Context, h uint64, n int) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return nil, err
	}
	if n == 0 {
		return []byte{}, nil
	}
	if n > maxRandom {
		return nil, RV(ckrArgumentsBad)
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return nil, err
	}
	b, err := t.Random(ctx, n)
	return b, a.cardError(err)
}

// maxRandom bounds one C_GenerateRandom: the card makes random bytes slowly, in a transaction
// the other applications wait for.
const maxRandom = 64 << 10

// SeedRandom is C_SeedRandom: the card's generator takes no seed.
func (a *App) SeedRandom(h uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return err
	}
	return RV(ckrRandomSeedNotSupported)
}
