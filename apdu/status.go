package apdu

import (
	"errors"
	"fmt"
)

// StatusWord is the two trailer bytes SW1 SW2 of a response APDU (ISO/IEC 7816-4 §5.1.3).
type StatusWord uint16

// Status words used by PIV cards and the hosts that talk to them (ISO/IEC 7816-4 §5.6, SP 800-73-4 Pt 2 Table 6).
const (
	SWSuccess                     StatusWord = 0x9000
	SWBytesRemaining              StatusWord = 0x6100 // 61xx: xx more bytes wait for GET RESPONSE (00 = 256 or more)
	SWNoInformation               StatusWord = 0x6300
	SWVerifyFailed                StatusWord = 0x63C0 // 63Cx: verification failed, x tries left
	SWMemoryFailure               StatusWord = 0x6581
	SWWrongLength                 StatusWord = 0x6700
	SWLastCommandExpected         StatusWord = 0x6883
	SWChainingNotSupported        StatusWord = 0x6884
	SWSecurityStatusNotSatisfied  StatusWord = 0x6982
	SWAuthenticationBlocked       StatusWord = 0x6983
	SWConditionsNotSatisfied      StatusWord = 0x6985
	SWCommandNotAllowed           StatusWord = 0x6986
	SWIncorrectData               StatusWord = 0x6A80
	SWFunctionNotSupported        StatusWord = 0x6A81
	SWNotFound                    StatusWord = 0x6A82
	SWNotEnoughMemory             StatusWord = 0x6A84
	SWIncorrectP1P2               StatusWord = 0x6A86
	SWAlreadyExists               StatusWord = 0x6A89
	SWReferenceNotFound           StatusWord = 0x6A88
	SWWrongP1P2                   StatusWord = 0x6B00
	SWWrongLe                     StatusWord = 0x6C00 // 6Cxx: repeat the command with Le = xx
	SWInstructionNotSupported     StatusWord = 0x6D00
	SWClassNotSupported           StatusWord = 0x6E00
	SWNoPreciseDiagnosis          StatusWord = 0x6F00
	SWSecureMessagingNotSupported StatusWord = 0x6882
)

// SW1 returns the first status byte.
func (sw StatusWord) SW1() byte { return byte(sw >> 8) }

// SW2 returns the second status byte.
func (sw StatusWord) SW2() byte { return byte(sw) }

// OK reports whether sw is 9000.
func (sw StatusWord) OK() bool { return sw == SWSuccess }

// Retries returns x from a 63Cx status word (verification failed, x tries left).
func (sw StatusWord) Retries() (int, bool) {
	if sw&0xFFF0 != SWVerifyFailed {
		return 0, false
	}
	return int(sw & 0x0F), true
}

// VerifyFailed returns the 63Cx status word for n tries left; n above 15 saturates at 63CF.
func VerifyFailed(n int) StatusWord {
	return SWVerifyFailed | StatusWord(min(max(n, 0), 15))
}

var swText = map[StatusWord]string{
	SWSuccess:                     "success",
	SWNoInformation:               "verification failed",
	SWMemoryFailure:               "memory failure",
	SWWrongLength:                 "wrong length",
	SWSecureMessagingNotSupported: "secure messaging not supported",
	SWLastCommandExpected:         "last command of the chain expected",
	SWChainingNotSupported:        "command chaining not supported",
	SWSecurityStatusNotSatisfied:  "security status not satisfied",
	SWAuthenticationBlocked:       "authentication method blocked",
	SWConditionsNotSatisfied:      "conditions of use not satisfied",
	SWCommandNotAllowed:           "command not allowed",
	SWIncorrectData:               "incorrect parameters in the data field",
	SWFunctionNotSupported:        "function not supported",
	SWNotFound:                    "file or application not found",
	SWNotEnoughMemory:             "not enough memory",
	SWIncorrectP1P2:               "incorrect parameters P1-P2",
	SWAlreadyExists:               "data object already exists",
	SWReferenceNotFound:           "referenced data not found",
	SWWrongP1P2:                   "wrong parameters P1-P2",
	SWInstructionNotSupported:     "instruction not supported",
	SWClassNotSupported:           "class not supported",
	SWNoPreciseDiagnosis:          "no precise diagnosis",
}

// String returns the status word in hex with its ISO meaning, for example "6982 (security status not satisfied)".
func (sw StatusWord) String() string {
	if t, ok := swText[sw]; ok {
		return fmt.Sprintf("%04X (%s)", uint16(sw), t)
	}
	switch sw & 0xFF00 {
	case SWBytesRemaining:
		return fmt.Sprintf("%04X (%d bytes remaining)", uint16(sw), sw.SW2())
	case SWWrongLe:
		return fmt.Sprintf("%04X (wrong Le, exact length %d)", uint16(sw), sw.SW2())
	}
	if n, ok := sw.Retries(); ok {
		return fmt.Sprintf("%04X (verification failed, %d tries left)", uint16(sw), n)
	}
	return fmt.Sprintf("%04X", uint16(sw))
}

// Err returns nil for 9000 and an *Error otherwise.
func (sw StatusWord) Err() error {
	if sw == SWSuccess {
		return nil
	}
	return &Error{SW: sw}
}

// Errors that an *Error unwraps to, so callers can test with errors.Is without knowing status words.
var (
	ErrNotFound          = errors.New("not found")                     // 6A82, 6A88
	ErrSecurityStatus    = errors.New("security status not satisfied") // 6982
	ErrBlocked           = errors.New("authentication blocked")        // 6983
	ErrVerifyFailed      = errors.New("verification failed")           // 63Cx, 6300
	ErrConditions        = errors.New("conditions of use not satisfied")
	ErrWrongLength       = errors.New("wrong length")                // 6700
	ErrIncorrectData     = errors.New("incorrect data")              // 6A80
	ErrIncorrectP1P2     = errors.New("incorrect parameters P1-P2")  // 6A86, 6B00
	ErrNotSupported      = errors.New("instruction not supported")   // 6D00, 6A81
	ErrClassNotSupported = errors.New("class not supported")         // 6E00
	ErrMemory            = errors.New("card memory failure or full") // 6581, 6A84
)

// Error is a status word other than 9000, returned as a Go error.
type Error struct {
	SW StatusWord
}

func (e *Error) Error() string { return "card returned " + e.SW.String() }

// Unwrap maps the status word to one of the package's sentinel errors.
func (e *Error) Unwrap() error {
	switch e.SW {
	case SWNotFound, SWReferenceNotFound:
		return ErrNotFound
	case SWSecurityStatusNotSatisfied:
		return ErrSecurityStatus
	case SWAuthenticationBlocked:
		return ErrBlocked
	case SWNoInformation:
		return ErrVerifyFailed
	case SWConditionsNotSatisfied:
		return ErrConditions
	case SWWrongLength:
		return ErrWrongLength
	case SWIncorrectData:
		return ErrIncorrectData
	case SWIncorrectP1P2, SWWrongP1P2:
		return ErrIncorrectP1P2
	case SWInstructionNotSupported, SWFunctionNotSupported:
		return ErrNotSupported
	case SWClassNotSupported:
		return ErrClassNotSupported
	case SWMemoryFailure, SWNotEnoughMemory:
		return ErrMemory
	}
	if _, ok := e.SW.Retries(); ok {
		return ErrVerifyFailed
	}
	return nil
}
