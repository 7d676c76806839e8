package prompt

import (
	"context"
	"fmt"
	"os"
)

// DefaultEnvVar is the environment variable Env reads when given no name.
const DefaultEnvVar = "TOKENLAB_PIN"

// Env answers with the value of an environment variable, for scripts and CI. It answers only
// the first prompt of a Request sequence: after a wrong PIN (Attempt > 1) it returns an error
// wrapping ErrCancelled instead of making the card count the same wrong PIN twice.
type Env struct {
	// Name is the variable to read; "" means DefaultEnvVar.
	Name string
}

// PIN returns a copy of the variable's value. An unset variable is an error naming it; an empty
// one is ErrCancelled.
func (e Env) PIN(ctx context.Context, r Request) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prompt: environment variable %s: %w", e.name(), err)
	}
	if !r.firstAttempt() {
		return nil, fmt.Errorf("prompt: environment variable %s holds a PIN the card refused; not trying it again (attempt %d): %w",
			e.name(), r.Attempt, ErrCancelled)
	}
	v, ok := os.LookupEnv(e.name())
	if !ok {
		return nil, fmt.Errorf("prompt: environment variable %s is not set", e.name())
	}
	if v == "" {
		return nil, fmt.Errorf("prompt: environment variable %s is empty: %w", e.name(), ErrCancelled)
	}
	if len(v) > maxPINLen {
		return nil, fmt.Errorf("prompt: environment variable %s holds %d bytes, more than the %d a PIN may have",
			e.name(), len(v), maxPINLen)
	}
	return []byte(v), nil
}

func (e Env) name() string {
	if e.Name == "" {
		return DefaultEnvVar
	}
	return e.Name
}
