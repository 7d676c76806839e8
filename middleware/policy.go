package middleware

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Scope says who shares a PIN once it has been entered.
type Scope int

// Cache scopes.
const (
	// ScopeNone caches nothing: each login, and each use that needs the PIN, asks for it.
	ScopeNone Scope = iota
	// ScopeApplication caches the PIN for one application (a process), as OpenSC, NSS, ykcs11
	// and the Windows smart-card stack do.
	ScopeApplication
	// ScopeLogonSession is single logon: the PIN is cached for every application of the logon
	// session, and the card is left logged in for the next one (SafeNet SAC, ActivClient).
	ScopeLogonSession
)

var scopeNames = [...]string{"none", "application", "logon-session"}

func (s Scope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Disconnect says what an application leaves behind when it logs out or disconnects.
type Disconnect int

// Disconnect actions.
const (
	// DisconnectLeave leaves the card as it is: still verified for the next application.
	DisconnectLeave Disconnect = iota
	// DisconnectLogout clears the PIN status with VERIFY P1=FF (SP 800-73-4).
	DisconnectLogout
	// DisconnectReset resets the card (SCARD_RESET_CARD), as libykpiv does.
	DisconnectReset
)

var disconnectNames = [...]string{"leave", "logout", "reset"}

func (d Disconnect) String() string {
	if int(d) < len(disconnectNames) {
		return disconnectNames[d]
	}
	return fmt.Sprintf("Disconnect(%d)", int(d))
}

// Policy is how a middleware treats the PIN. The zero Policy caches nothing and honours
// PIN-always keys, but leaves the card as it is at disconnect and keeps nothing of a removal;
// the strict-2fa profile adds the reset at disconnect and clears on removal.
type Policy struct {
	// Name and Reproduces identify a named profile and the behaviour it reproduces.
	Name       string
	Reproduces string

	Scope Scope
	// TTL bounds how long a cached PIN lives after it was entered; 0 means no bound.
	TTL time.Duration
	// Idle ends a cached PIN after this long without use, and a login too: with
	// ScopeLogonSession the single logon (the card is logged out) when no application of the
	// session used it, otherwise the application's own login, which then needs the PIN again
	// (SP 800-63B §4.2.3). 0 means never.
	Idle time.Duration
	// MaxUses bounds how often a cached PIN is presented to the card again without asking
	// (OpenSC's pin_cache_counter); 0 means no bound.
	MaxUses int
	// BypassPINAlways silently re-sends a cached PIN before each operation with a PIN-always
	// key (9C) and reports CKA_ALWAYS_AUTHENTICATE false: OpenSC's
	// pin_cache_ignore_user_consent quirk. SP 800-73-4 and FIPS 201 forbid it.
	BypassPINAlways bool
	// TrustCardStatus lets a login that brings no PIN succeed without asking when the card is
	// already verified, as single logon does.
	TrustCardStatus bool
	// AtDisconnect is done when the application logs out or goes away.
	AtDisconnect Disconnect
	// KeepCacheAtLogout keeps the application's cached PIN when it logs out or a connection of
	// it ends; only the application's end forgets it. The Windows smart-card stack has no
	// logout, and its base CSP keeps the PIN for the process's lifetime (PinCacheNormal).
	KeepCacheAtLogout bool
	// ClearOnRemoval forgets cached PINs when the card is removed.
	ClearOnRemoval bool
	// ReverifyOnReinsert presents the cached PIN again, without asking, when the same card
	// comes back (libykpiv checks the serial and re-VERIFYs, yubico-piv-tool#445).
	ReverifyOnReinsert bool
}

// Profiles are the named policies, each reproducing a real middleware; see
// ../shared/reference/pin-caching.md §2 for the sources.
var Profiles = []Policy{
	{
		Name:           "strict-2fa",
		Reproduces:     "what policy asks for: a PIN on every connection and for every PIN-always signature, nothing cached, the card reset at disconnect and forgotten on removal",
		Scope:          ScopeNone,
		AtDisconnect:   DisconnectReset,
		ClearOnRemoval: true,
	},
	{
		Name:            "safenet-single-logon",
		Reproduces:      "SafeNet Authentication Client with Single Logon on: one PIN per Windows logon session for every application, the token kept logged in (why FortiClient reconnects an IKEv2 VPN without a PIN)",
		Scope:           ScopeLogonSession,
		TrustCardStatus: true,
		AtDisconnect:    DisconnectLeave,
		ClearOnRemoval:  true,
	},
	{
		Name:            "activclient",
		Reproduces:      "HID ActivClient's default PIN caching: one PIN per logon session, dropped after 15 minutes without use, on removal, lock or logoff",
		Scope:           ScopeLogonSession,
		Idle:            15 * time.Minute,
		TrustCardStatus: true,
		AtDisconnect:    DisconnectLeave,
		ClearOnRemoval:  true,
	},
	{
		Name:           "opensc-default",
		Reproduces:     "OpenSC's defaults: PIN cached per process and re-presented up to 10 times (pin_cache_counter), never for a PIN-always key; card left verified at disconnect",
		Scope:          ScopeApplication,
		MaxUses:        10,
		AtDisconnect:   DisconnectLeave,
		ClearOnRemoval: true,
	},
	{
		Name:            "opensc-ignore-user-consent",
		Reproduces:      "OpenSC with pin_cache_ignore_user_consent = true: as opensc-default, but the cached PIN is silently re-sent for PIN-always keys, which then report CKA_ALWAYS_AUTHENTICATE false",
		Scope:           ScopeApplication,
		MaxUses:         10,
		BypassPINAlways: true,
		AtDisconnect:    DisconnectLeave,
		ClearOnRemoval:  true,
	},
	{
		Name:               "ykcs11",
		Reproduces:         "Yubico's ykcs11/libykpiv: login per process, PIN kept in memory and silently re-verified when the same YubiKey comes back; the card reset at disconnect",
		Scope:              ScopeApplication,
		AtDisconnect:       DisconnectReset,
		ClearOnRemoval:     false,
		ReverifyOnReinsert: true,
	},
	{
		Name:              "windows-minidriver",
		Reproduces:        "the Windows smart-card base CSP/KSP with PinCacheNormal: PIN cached per process for its lifetime, across disconnects and even removal; the OpenSC minidriver marks 9C PinCacheAlwaysPrompt",
		Scope:             ScopeApplication,
		KeepCacheAtLogout: true,
		AtDisconnect:      DisconnectLeave,
		ClearOnRemoval:    false,
	},
	{
		Name:           "nss-default",
		Reproduces:     "NSS (Firefox, Thunderbird) with security.ask_for_password = 0: log in once per process, context login for PIN-always keys, re-login after removal",
		Scope:          ScopeApplication,
		AtDisconnect:   DisconnectLeave,
		ClearOnRemoval: true,
	},
}

// Profile returns the named profile.
func Profile(name string) (Policy, error) {
	for _, p := range Profiles {
		if p.Name == name {
			return p, nil
		}
	}
	names := make([]string, len(Profiles))
	for i, p := range Profiles {
		names[i] = p.Name
	}
	sort.Strings(names)
	return Policy{}, fmt.Errorf("%q is not a profile (%s)", name, strings.Join(names, ", "))
}

// ParseScope parses a Scope name.
func ParseScope(s string) (Scope, error) {
	for i, n := range scopeNames {
		if n == s {
			return Scope(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a cache scope (none, application, logon-session)", s)
}

// ParseDisconnect parses a Disconnect name.
func ParseDisconnect(s string) (Disconnect, error) {
	for i, n := range disconnectNames {
		if n == s {
			return Disconnect(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a disconnect action (leave, logout, reset)", s)
}

// Knobs names the settings of a Policy as Set takes them: the keys of the [policy] section of
// `tokenlab serve`'s configuration, and of a policy specification (ParsePolicy).
var Knobs = []string{"scope", "ttl", "idle", "max-uses", "bypass-pin-always", "trust-card-status",
	"at-disconnect", "keep-cache-at-logout", "clear-on-removal", "reverify-on-reinsert"}

// Set sets the knob named knob from its text: a scope or disconnect name, a duration such as 15m
// (0 for none), a count, or true or false.
func (p *Policy) Set(knob, value string) error {
	boolean := func(dst *bool) error {
		v, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("%q is not true or false", value)
		}
		*dst = v
		return nil
	}
	duration := func(dst *time.Duration) error {
		v, err := time.ParseDuration(value)
		if err != nil || v < 0 {
			return fmt.Errorf("%q is not a duration such as 15m (0 for none)", value)
		}
		*dst = v
		return nil
	}
	var err error
	switch knob {
	case "scope":
		p.Scope, err = ParseScope(value)
	case "ttl":
		err = duration(&p.TTL)
	case "idle":
		err = duration(&p.Idle)
	case "max-uses":
		n, e := strconv.Atoi(value)
		if e != nil || n < 0 {
			return fmt.Errorf("%q is not a count (0 for no bound)", value)
		}
		p.MaxUses = n
	case "bypass-pin-always":
		err = boolean(&p.BypassPINAlways)
	case "trust-card-status":
		err = boolean(&p.TrustCardStatus)
	case "at-disconnect":
		p.AtDisconnect, err = ParseDisconnect(value)
	case "keep-cache-at-logout":
		err = boolean(&p.KeepCacheAtLogout)
	case "clear-on-removal":
		err = boolean(&p.ClearOnRemoval)
	case "reverify-on-reinsert":
		err = boolean(&p.ReverifyOnReinsert)
	default:
		return fmt.Errorf("unknown policy knob (%s)", strings.Join(Knobs, ", "))
	}
	return err
}

// Override sets knob over p, as Set does, and marks a change in p's name: "strict-2fa" with
// idle=15m becomes "strict-2fa+idle=15m", so that audit trails and reports never claim a
// profile's stock behaviour for a changed one. A value the profile already has changes neither.
func (p *Policy) Override(knob, value string) error {
	q := *p
	if err := q.Set(knob, value); err != nil {
		return err
	}
	if q != *p {
		q.Name += "+" + knob + "=" + value
		*p = q
	}
	return nil
}

// ParsePolicy returns the policy a specification names: a profile, with knobs set over it as
// PROFILE+KNOB=VALUE...: "strict-2fa+idle=15m" is strict-2fa that also ends a login after 15
// idle minutes.
func ParsePolicy(spec string) (Policy, error) {
	name, rest, hasKnobs := strings.Cut(spec, "+")
	p, err := Profile(name)
	if err != nil || !hasKnobs {
		return p, err
	}
	for kv := range strings.SplitSeq(rest, "+") {
		knob, value, ok := strings.Cut(kv, "=")
		if !ok || value == "" {
			return Policy{}, fmt.Errorf("policy %q: %q is not KNOB=VALUE", spec, kv)
		}
		if err := p.Override(knob, value); err != nil {
			return Policy{}, fmt.Errorf("policy %q: %s: %v", spec, knob, err)
		}
	}
	return p, nil
}
