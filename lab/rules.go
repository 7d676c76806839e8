package lab

import (
	"time"

	"tokenlab/middleware"
)

// privateOp reports whether an event is a use of a private key that needs the PIN (9E, the
// card-authentication key, needs none).
func privateOp(ev middleware.Event) bool {
	switch ev.Kind {
	case middleware.EventSign, middleware.EventDecrypt, middleware.EventKeyAgreement:
		return ev.Slot != "9e"
	}
	return false
}

// judge applies the scenario's rules to a finished run: each rule's verdict, and on each step
// the rules it broke.
func judge(res *Result, sc *Scenario) {
	stepOf := make([]int, len(res.Events)) // event index → step index
	for i, s := range res.Steps {
		for j := s.First; j < s.End; j++ {
			stepOf[j] = i
		}
	}
	for _, rule := range sc.Rules {
		bad := map[int]bool{} // step indices
		switch rule.Name {
		case RulePINEveryConnection:
			for i, st := range sc.Steps {
				if st.Op == OpConnect && res.Steps[i].Err == "" && res.Steps[i].Prompts == 0 {
					bad[i] = true
				}
			}
		case RulePINEverySignature:
			// Between two signatures with the key, its application must have asked for the PIN
			// for that key.
			want := slotName(rule.Slot)
			asked := map[string]bool{}
			for j, ev := range res.Events {
				if ev.Slot != want {
					continue
				}
				switch ev.Kind {
				case middleware.EventPrompt:
					asked[ev.Application] = true
				case middleware.EventSign:
					if !asked[ev.Application] {
						bad[stepOf[j]] = true
					}
					asked[ev.Application] = false
				}
			}
		case RuleNoReuseAfterRemoval:
			// After a removal, each application's first use of a key comes after a prompt.
			removed := false
			asked := map[string]bool{}
			next := 0 // the next step to look at for a removal
			for j, ev := range res.Events {
				for ; next <= stepOf[j] && next < len(sc.Steps); next++ {
					if sc.Steps[next].Op == OpRemove {
						removed, asked = true, map[string]bool{}
					}
				}
				if !removed {
					continue
				}
				switch {
				case ev.Kind == middleware.EventPrompt:
					asked[ev.Application] = true
				case privateOp(ev) && !asked[ev.Application]:
					bad[stepOf[j]] = true
				}
			}
		case RuleReauthAfter:
			// A key used after the token sat idle for the rule's time must have been preceded
			// by a prompt (SP 800-63B §4.2.3 reauthentication after inactivity).
			var last time.Time
			for j, ev := range res.Events {
				switch {
				case ev.Kind == middleware.EventPrompt:
					last = ev.Time
				case privateOp(ev):
					if !last.IsZero() && ev.Time.Sub(last) >= rule.Idle {
						bad[stepOf[j]] = true
					}
					last = ev.Time
				}
			}
		}
		v := Verdict{Rule: rule.String(), OK: len(bad) == 0}
		for i := range res.Steps {
			if bad[i] {
				v.Steps = append(v.Steps, res.Steps[i].Line)
				res.Steps[i].Violations = append(res.Steps[i].Violations, rule.String())
			}
		}
		res.Verdicts = append(res.Verdicts, v)
	}
}
