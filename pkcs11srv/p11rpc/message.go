package p11rpc

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
)

// Errors of the message layer. Which answer each deserves is in ErrorRV.
var (
	// ErrUnknownCall reports a call id that is 0 in a request or above 89 (§1.3).
	ErrUnknownCall = errors.New("p11rpc: unknown call id")
	// ErrSignatureMismatch reports a signature string that differs from the call table (§1.2).
	ErrSignatureMismatch = errors.New("p11rpc: signature does not match the call")
	// ErrCallMismatch reports a reply whose call id is neither the request's nor ERROR.
	ErrCallMismatch = errors.New("p11rpc: reply is for another call")
	// ErrMalformed reports a message that cannot be decoded: truncated, a length out of range,
	// a flag byte other than 0 or 1, or a form no p11-kit client of that version sends.
	ErrMalformed = errors.New("p11rpc: malformed message")
	// ErrTrailingBytes reports bytes left after the last argument.
	ErrTrailingBytes = errors.New("p11rpc: trailing bytes after the last argument")
	// ErrOutOfOrder reports an argument read or written against the signature: another letter
	// was due, or Done or Bytes was called before the last one. It is a bug in the caller.
	ErrOutOfOrder = errors.New("p11rpc: argument out of signature order")
	// ErrNestedTemplate reports an attribute whose value is itself a template (WRAP_TEMPLATE,
	// UNWRAP_TEMPLATE, DERIVE_TEMPLATE). p11-kit 0.24.1 cannot carry them (P14) and recursing
	// into them was a denial of service in p11-kit (P12), so they are refused, not decoded.
	ErrNestedTemplate = errors.New("p11rpc: nested attribute templates are not supported")
	// ErrUnsupportedMechanism reports a mechanism whose parameter layout this package does not
	// decode (or encode), so the rest of the message cannot be found.
	ErrUnsupportedMechanism = errors.New("p11rpc: mechanism parameter not supported")
	// ErrInvalidAttribute reports an attribute value that does not fit the class of its type:
	// a CK_BBOOL that is not 1 byte, a CK_ULONG that is not 8, a date that is not 0 or 8.
	ErrInvalidAttribute = errors.New("p11rpc: attribute value does not fit its type")
	// ErrInvalidArgument reports an argument that decodes but that no PKCS#11 call accepts,
	// such as a NULL buffer with a non-zero length, or a value an encoder cannot represent.
	ErrInvalidArgument = errors.New("p11rpc: invalid argument")
)

// ErrorReply is returned by ParseResponse when the server answered with an ERROR message.
type ErrorReply struct {
	// RV is the CKR_ value the server sent; never CKR_OK.
	RV uint64
}

func (e *ErrorReply) Error() string { return fmt.Sprintf("p11rpc: server answered ERROR rv %#x", e.RV) }

// CKR_ values this layer answers with; the full set lives with the PKCS#11 semantics.
const (
	ckrGeneralError          = 0x05
	ckrArgumentsBad          = 0x07
	ckrAttributeTypeInvalid  = 0x12
	ckrAttributeValueInvalid = 0x13
	ckrDeviceError           = 0x30
	ckrMechanismInvalid      = 0x70
)

// ErrorRV returns the CKR_ value a server puts in the ERROR reply (ErrorBody) when an argument
// accessor of Request failed with err: CKR_ATTRIBUTE_TYPE_INVALID for ErrNestedTemplate,
// CKR_MECHANISM_INVALID for ErrUnsupportedMechanism, CKR_ATTRIBUTE_VALUE_INVALID for
// ErrInvalidAttribute, CKR_ARGUMENTS_BAD for ErrInvalidArgument and CKR_DEVICE_ERROR for
// anything else (P13). An error from ParseRequest itself (ErrUnknownCall, ErrSignatureMismatch,
// ErrMalformed before the arguments) is not answered: the connection is dropped (§1.3).
func ErrorRV(err error) uint64 {
	switch {
	case errors.Is(err, ErrNestedTemplate):
		return ckrAttributeTypeInvalid
	case errors.Is(err, ErrUnsupportedMechanism):
		return ckrMechanismInvalid
	case errors.Is(err, ErrInvalidAttribute):
		return ckrAttributeValueInvalid
	case errors.Is(err, ErrInvalidArgument):
		return ckrArgumentsBad
	}
	return ckrDeviceError
}

// ErrorBody returns the body of an ERROR reply carrying rv (§1.3): call 0, signature "u", the
// rv as u64. A client treats rv 0 (CKR_OK) in an ERROR reply as a protocol error, so 0 is sent
// as CKR_GENERAL_ERROR.
func ErrorBody(rv uint64) []byte {
	if rv == 0 {
		rv = ckrGeneralError
	}
	w := NewResponse(CallError, Protocol0)
	w.Ulong(rv)
	b, _ := w.Bytes() // cannot fail: the signature "u" is complete
	return b
}

// Wire limits. A raw byte array length of 0xffffffff means NULL; p11-kit refuses lengths from
// 0x7fffffff up, and so does this package.
const (
	nullLength = 0xffffffff
	maxWireLen = 0x7ffffffe
)

// NonNullEmptyBuffer is the fy capacity p11-kit 0.25 and later send for a non-NULL output
// buffer of length 0 (§2.6); 0 stays a NULL buffer, that is a length query.
const NonNullEmptyBuffer uint32 = 0xffffffff

// reader consumes the arguments of a message in signature order.
type reader struct {
	s      cryptobyte.String
	call   Call
	sig    string
	pos    int // index in sig of the next letter
	arg    int // 1-based index of the argument being read
	letter string
	proto  Protocol
	err    error
}

// begin checks that letter is next in the signature and consumes it. It returns false, with
// r.err set, if it is not or an earlier argument failed.
func (r *reader) begin(letter string) bool {
	if r.err != nil {
		return false
	}
	if !strings.HasPrefix(r.sig[r.pos:], letter) {
		r.err = fmt.Errorf("%w: %s: read %q as argument %d, but the signature %q has %q there", ErrOutOfOrder, r.call, letter, r.arg+1, r.sig, r.sig[r.pos:])
		return false
	}
	r.pos += len(letter)
	r.arg++
	r.letter = letter
	return true
}

// fail records why the current argument cannot be decoded.
func (r *reader) fail(kind error, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s argument %d (%s): %s", kind, r.call, r.arg, r.letter, fmt.Sprintf(format, args...))
	}
}

func (r *reader) u8(v *uint8) bool {
	if !r.s.ReadUint8(v) {
		r.fail(ErrMalformed, "truncated")
		return false
	}
	return true
}

func (r *reader) u32(v *uint32) bool {
	if !r.s.ReadUint32(v) {
		r.fail(ErrMalformed, "truncated")
		return false
	}
	return true
}

func (r *reader) u64(v *uint64) bool {
	if !r.s.ReadUint64(v) {
		r.fail(ErrMalformed, "truncated")
		return false
	}
	return true
}

// flag reads a byte that must be 0 or 1.
func (r *reader) flag(what string) (bool, bool) {
	var v uint8
	if !r.u8(&v) {
		return false, false
	}
	if v > 1 {
		r.fail(ErrMalformed, "%s byte is %d, not 0 or 1", what, v)
		return false, false
	}
	return v == 1, true
}

// raw reads a raw byte array: u32 length and bytes, 0xffffffff for NULL (nil). A present
// array is never nil, even when empty.
func (r *reader) raw() ([]byte, bool) {
	var n uint32
	if !r.u32(&n) {
		return nil, false
	}
	if n == nullLength {
		return nil, true
	}
	if n > maxWireLen {
		r.fail(ErrMalformed, "array length %#x is over the limit of %#x", n, maxWireLen)
		return nil, false
	}
	var b []byte
	if !r.s.ReadBytes(&b, int(n)) {
		r.fail(ErrMalformed, "array of %d bytes truncated to %d", n, len(r.s))
		return nil, false
	}
	if b == nil {
		b = []byte{}
	}
	return b, true
}

// count reads an element count and checks that count elements of at least minSize bytes
// each fit in what is left, which bounds every allocation by the message size.
func (r *reader) count(minSize int) (int, bool) {
	var n uint32
	if !r.u32(&n) {
		return 0, false
	}
	if uint64(n)*uint64(minSize) > uint64(len(r.s)) {
		r.fail(ErrMalformed, "count %d does not fit in the %d bytes left", n, len(r.s))
		return 0, false
	}
	return int(n), true
}

// Byte reads a y argument.
func (r *reader) Byte() (byte, error) {
	var v uint8
	if !r.begin("y") || !r.u8(&v) {
		return 0, r.err
	}
	return v, nil
}

// Ulong reads a u argument: a CK_ULONG, 8 bytes big-endian on the wire.
func (r *reader) Ulong() (uint64, error) {
	var v uint64
	if !r.begin("u") || !r.u64(&v) {
		return 0, r.err
	}
	return v, nil
}

// Version reads a v argument, a CK_VERSION.
func (r *reader) Version() (major, minor byte, err error) {
	if !r.begin("v") || !r.u8(&major) || !r.u8(&minor) {
		return 0, 0, r.err
	}
	return major, minor, nil
}

// String reads an s argument: a blank-padded string of a fixed size (the caller checks the
// size: p11-kit clients require it exact, §2.1).
func (r *reader) String() (string, error) {
	if !r.begin("s") {
		return "", r.err
	}
	b, ok := r.raw()
	if !ok {
		return "", r.err
	}
	if len(b) == 0 {
		r.fail(ErrMalformed, "empty or NULL fixed-size string")
		return "", r.err
	}
	return string(b), nil
}

// Signature returns the signature string of the message, from the call table.
func (r *reader) Signature() string { return r.sig }

// Done checks that every argument of the signature was read and that no bytes follow them.
func (r *reader) Done() error {
	if r.err != nil {
		return r.err
	}
	if r.pos < len(r.sig) {
		return fmt.Errorf("%w: %s: %q of signature %q not read", ErrOutOfOrder, r.call, r.sig[r.pos:], r.sig)
	}
	if len(r.s) > 0 {
		return fmt.Errorf("%w: %s: %d bytes after the last argument", ErrTrailingBytes, r.call, len(r.s))
	}
	return nil
}

// readHeader reads the call id and the signature string that start every body.
func readHeader(body []byte) (cryptobyte.String, Call, []byte, error) {
	s := cryptobyte.String(body)
	var id, n uint32
	if !s.ReadUint32(&id) {
		return nil, 0, nil, fmt.Errorf("%w: body of %d bytes has no call id", ErrMalformed, len(body))
	}
	call := Call(id)
	if !s.ReadUint32(&n) {
		return nil, call, nil, fmt.Errorf("%w: %s: no signature", ErrMalformed, call)
	}
	if n == nullLength || n > maxWireLen {
		return nil, call, nil, fmt.Errorf("%w: %s: signature length %#x", ErrMalformed, call, n)
	}
	var sig []byte
	if !s.ReadBytes(&sig, int(n)) {
		return nil, call, nil, fmt.Errorf("%w: %s: signature of %d bytes truncated", ErrMalformed, call, n)
	}
	return s, call, sig, nil
}

// checkSignature compares the signature string of a message with the table.
func checkSignature(call Call, got []byte, want string) error {
	if string(got) == want {
		return nil
	}
	shown := got
	if len(shown) > 32 {
		shown = shown[:32]
	}
	return fmt.Errorf("%w: %s carries signature %q instead of %q", ErrSignatureMismatch, call, shown, want)
}

// Request is a decoded request body whose arguments are read in signature order with the
// accessor for each letter. An accessor that fails leaves the Request failed: every later
// accessor returns the same error. Byte slices returned alias the body.
type Request struct {
	reader
	// Call is the call id.
	Call Call
	// Protocol is the version byte the client offered; it selects the M layout and the
	// attribute type table.
	Protocol Protocol
}

// ParseRequest reads the call id and signature of a request body sent by a client that
// offered proto in the handshake. Any error means the peer does not speak this protocol, and
// the server drops the connection (§1.3): ErrUnknownCall for id 0 or above 89,
// ErrSignatureMismatch when the signature is not the table's, ErrMalformed when the body is
// too short to hold them. Calls 66–89 parse, so that the server can answer them with
// CKR_FUNCTION_NOT_SUPPORTED instead of hanging up.
func ParseRequest(body []byte, proto Protocol) (*Request, error) {
	s, call, sig, err := readHeader(body)
	if err != nil {
		return nil, err
	}
	want, ok := call.RequestSignature()
	if !ok {
		return nil, fmt.Errorf("%w: %d is not a request", ErrUnknownCall, uint32(call))
	}
	if err := checkSignature(call, sig, want); err != nil {
		return nil, err
	}
	return &Request{
		reader:   reader{s: s, call: call, sig: want, proto: proto.layout()},
		Call:     call,
		Protocol: proto,
	}, nil
}

// ByteArray reads an ay argument: the bytes and whether the client passed a NULL pointer.
// Clients that offered 0 send NULL as valid=0 with length 0, later ones as valid=1 with length
// 0xffffffff; the other form is refused with ErrMalformed so that each body has one meaning.
// A NULL pointer with a non-zero length is refused with ErrInvalidArgument.
func (r *Request) ByteArray() (b []byte, null bool, err error) {
	if !r.begin("ay") {
		return nil, false, r.err
	}
	valid, ok := r.flag("valid")
	if !ok {
		return nil, false, r.err
	}
	if !valid {
		var n uint32
		if !r.u32(&n) {
			return nil, false, r.err
		}
		if n != 0 {
			r.fail(ErrInvalidArgument, "NULL buffer with length %d", n)
			return nil, false, r.err
		}
		if r.proto != Protocol0 {
			r.fail(ErrMalformed, "NULL in the 0.24 form (valid 0) from a client that offered version %d", r.proto)
			return nil, false, r.err
		}
		return nil, true, nil
	}
	b, ok = r.raw()
	if !ok {
		return nil, false, r.err
	}
	if b == nil && r.proto == Protocol0 {
		r.fail(ErrMalformed, "NULL in the 0.25 form (length 0xffffffff) from a client that offered version 0")
		return nil, false, r.err
	}
	return b, b == nil, nil
}

// Zstring reads a z argument (C_InitToken's label): the string, or null when the client sent
// a NULL pointer.
func (r *Request) Zstring() (s string, null bool, err error) {
	if !r.begin("z") {
		return "", false, r.err
	}
	b, ok := r.raw()
	if !ok {
		return "", false, r.err
	}
	return string(b), b == nil, nil
}

// BufferSize reads an fy argument: the capacity of the caller's output buffer. 0 means the
// caller passed NULL and asks for the length (§2.5); NonNullEmptyBuffer is a non-NULL buffer of
// length 0 from p11-kit 0.25 and later. The value is attacker-controlled: never allocate by it.
func (r *Request) BufferSize() (uint32, error) {
	var v uint32
	if !r.begin("fy") || !r.u32(&v) {
		return 0, r.err
	}
	return v, nil
}

// UlongBufferSize reads an fu argument: how many CK_ULONGs the caller has room for; 0 is a
// count query (§2.5). For C_FindObjects it is ulMaxObjectCount.
func (r *Request) UlongBufferSize() (uint32, error) {
	var v uint32
	if !r.begin("fu") || !r.u32(&v) {
		return 0, r.err
	}
	return v, nil
}

// AttributeRequests reads an fA argument: the attributes C_GetAttributeValue asks for, each
// with the capacity of the caller's buffer (0 for a NULL pValue, a size query). A nested
// template type is refused with ErrNestedTemplate: clients from 0.25.4 on may follow it with a
// nested request list (even with capacity 0), and no reply could carry it to 0.24.1 clients.
func (r *Request) AttributeRequests() ([]AttributeRequest, error) {
	if !r.begin("fA") {
		return nil, r.err
	}
	n, ok := r.count(8)
	if !ok {
		return nil, r.err
	}
	out := make([]AttributeRequest, n)
	for i := range out {
		if !r.u32(&out[i].Type) || !r.u32(&out[i].Capacity) {
			return nil, r.err
		}
		if isNestedTemplate(out[i].Type) {
			r.fail(ErrNestedTemplate, "attribute %d is %s", i, attributeName(out[i].Type))
			return nil, r.err
		}
	}
	return out, nil
}

// Attributes reads an aA argument: a template, with values in host-memory form (see
// Attribute). It fails with ErrNestedTemplate for a nested template type, with
// ErrInvalidAttribute for a value that does not fit its type, and with ErrInvalidArgument for
// an attribute marked unavailable (ulValueLen -1), which has no meaning in a template.
func (r *Request) Attributes() ([]Attribute, error) {
	if !r.begin("aA") {
		return nil, r.err
	}
	n, ok := r.count(5)
	if !ok {
		return nil, r.err
	}
	out := make([]Attribute, n)
	for i := range out {
		var valid bool
		if !r.u32(&out[i].Type) {
			return nil, r.err
		}
		typ := out[i].Type
		if valid, ok = r.flag("valid"); !ok {
			return nil, r.err
		}
		if !valid {
			r.fail(ErrInvalidArgument, "attribute %d, %s, is marked unavailable in a template", i, attributeName(typ))
			return nil, r.err
		}
		var length uint32
		if !r.u32(&length) {
			return nil, r.err
		}
		v, null, ok := r.attributeValue(i, typ)
		if !ok {
			return nil, r.err
		}
		if null && length != 0 {
			r.fail(ErrInvalidAttribute, "attribute %d, %s, has a NULL value with length %d", i, attributeName(typ), length)
			return nil, r.err
		}
		if uint64(len(v)) != uint64(length) {
			switch attributeClass(typ, r.proto) {
			case classBool:
				r.fail(ErrInvalidAttribute, "attribute %d, %s, is a CK_BBOOL but has length %d, not 1", i, attributeName(typ), length)
			case classUlong:
				r.fail(ErrInvalidAttribute, "attribute %d, %s, is a CK_ULONG but has length %d, not 8", i, attributeName(typ), length)
			default:
				r.fail(ErrInvalidAttribute, "attribute %d, %s, has length %d but %d value bytes", i, attributeName(typ), length, len(v))
			}
			return nil, r.err
		}
		out[i].Value = v
	}
	return out, nil
}

// Mechanism reads an M argument in the layout of the protocol the client offered (§2.4, §2.6).
// It fails with ErrUnsupportedMechanism, naming the mechanism, when its parameter has a
// layout this package does not decode.
func (r *Request) Mechanism() (Mechanism, error) {
	if !r.begin("M") {
		return Mechanism{}, r.err
	}
	m, ok := r.mechanism()
	if !ok {
		return Mechanism{}, r.err
	}
	return m, nil
}

// writer appends the arguments of a message in signature order.
type writer struct {
	b     *cryptobyte.Builder
	call  Call
	sig   string
	pos   int
	arg   int
	proto Protocol
	err   error
}

func newWriter(call Call, sig string, proto Protocol) writer {
	b := cryptobyte.NewBuilder(make([]byte, 0, 64))
	b.AddUint32(uint32(call))
	b.AddUint32(uint32(len(sig)))
	b.AddBytes([]byte(sig))
	return writer{b: b, call: call, sig: sig, proto: proto.layout()}
}

func (w *writer) begin(letter string) bool {
	if w.err != nil {
		return false
	}
	if !strings.HasPrefix(w.sig[w.pos:], letter) {
		w.err = fmt.Errorf("%w: %s: wrote %q as argument %d, but the signature %q has %q there", ErrOutOfOrder, w.call, letter, w.arg+1, w.sig, w.sig[w.pos:])
		return false
	}
	w.pos += len(letter)
	w.arg++
	return true
}

func (w *writer) fail(kind error, format string, args ...any) {
	if w.err == nil {
		w.err = fmt.Errorf("%w: %s argument %d: %s", kind, w.call, w.arg, fmt.Sprintf(format, args...))
	}
}

// raw appends a raw byte array; nil is written as NULL.
func (w *writer) raw(b []byte) {
	if b == nil {
		w.b.AddUint32(nullLength)
		return
	}
	if len(b) > maxWireLen {
		w.fail(ErrInvalidArgument, "array of %d bytes is over the limit of %d", len(b), maxWireLen)
		return
	}
	w.b.AddUint32(uint32(len(b)))
	w.b.AddBytes(b)
}

func (w *writer) count(n int) bool {
	if uint64(n) > math.MaxUint32 {
		w.fail(ErrInvalidArgument, "%d elements do not fit a u32 count", n)
		return false
	}
	w.b.AddUint32(uint32(n))
	return true
}

// Byte writes a y argument.
func (w *writer) Byte(v byte) {
	if w.begin("y") {
		w.b.AddUint8(v)
	}
}

// ByteArray writes an ay argument holding b (valid = 1): in a request, the caller's input; in a
// response, the output of a call whose caller's buffer was large enough. nil is written as an
// empty, non-NULL array.
func (w *writer) ByteArray(b []byte) {
	if !w.begin("ay") {
		return
	}
	if b == nil {
		b = []byte{}
	}
	w.b.AddUint8(1)
	w.raw(b)
}

// Ulong writes a u argument.
func (w *writer) Ulong(v uint64) {
	if w.begin("u") {
		w.b.AddUint64(v)
	}
}

// Version writes a v argument, a CK_VERSION.
func (w *writer) Version(major, minor byte) {
	if w.begin("v") {
		w.b.AddUint8(major)
		w.b.AddUint8(minor)
	}
}

// String writes an s argument: s padded with blanks, or cut at a character boundary, to exactly
// size bytes, the size of the CK_*_INFO field (§2.1: 16, 32 or 64; clients refuse any other).
func (w *writer) String(s string, size int) {
	if !w.begin("s") {
		return
	}
	if size <= 0 || size > maxWireLen {
		w.fail(ErrInvalidArgument, "string field size %d", size)
		return
	}
	w.raw(padString(s, size))
}

// padString returns s cut or blank-padded to exactly size bytes; a cut never splits a UTF-8
// sequence.
func padString(s string, size int) []byte {
	if len(s) > size {
		cut := size
		for cut > 0 && cut > size-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if !utf8.RuneStart(s[cut]) {
			cut = size // not UTF-8: keep the bytes
		}
		s = s[:cut]
	}
	b := make([]byte, size)
	copy(b, s)
	for i := len(s); i < size; i++ {
		b[i] = ' '
	}
	return b
}

// bytes returns the message once every letter of the signature is written.
func (w *writer) bytes() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.pos < len(w.sig) {
		return nil, fmt.Errorf("%w: %s: %q of signature %q not written", ErrOutOfOrder, w.call, w.sig[w.pos:], w.sig)
	}
	return w.b.Bytes()
}

// Response builds a reply body (the server side). Each method appends one argument and must
// be called in the order of the call's response signature; a mistake, or a value the client
// could not decode, surfaces as the error of Bytes.
type Response struct {
	writer
}

// NewResponse starts the reply to call for a client that offered proto: the call id and the
// table's response signature. proto matters for attribute values (the type table) and P.
func NewResponse(call Call, proto Protocol) *Response {
	sig, ok := call.ResponseSignature()
	if !ok {
		r := &Response{newWriter(call, "", proto)}
		r.err = fmt.Errorf("%w: %d", ErrUnknownCall, uint32(call))
		return r
	}
	return &Response{newWriter(call, sig, proto)}
}

// ByteArrayLength writes an ay argument with no bytes (valid = 0) and the length the output
// needs: the answer to a length query (fy = 0) or to a buffer that is too small, which the
// client turns into CKR_BUFFER_TOO_SMALL (§2.5).
func (r *Response) ByteArrayLength(n uint32) {
	if r.begin("ay") {
		r.b.AddUint8(0)
		r.b.AddUint32(n)
	}
}

// UlongArray writes an au argument holding v (valid = 1).
func (r *Response) UlongArray(v []uint64) {
	if !r.begin("au") {
		return
	}
	r.b.AddUint8(1)
	if !r.count(len(v)) {
		return
	}
	for _, x := range v {
		r.b.AddUint64(x)
	}
}

// UlongArrayLength writes an au argument with no elements (valid = 0) and the count the
// output needs: the answer to fu = 0 or to a buffer that is too small (§2.5).
func (r *Response) UlongArrayLength(n uint32) {
	if r.begin("au") {
		r.b.AddUint8(0)
		r.b.AddUint32(n)
	}
}

// Attributes writes the aA argument of a C_GetAttributeValue reply: one result per requested
// attribute, in the request's count and order (P4). Values must be in host-memory form and fit
// their type; nested template types cannot be sent at all (ErrNestedTemplate; answer the call
// with an ERROR instead).
func (r *Response) Attributes(results []AttributeResult) {
	if !r.begin("aA") || !r.count(len(results)) {
		return
	}
	for i := range results {
		r.attributeResult(i, &results[i])
	}
}

// ParamUpdate writes the P argument of C_DeriveKey2 (0.25.6+): for a mechanism m that takes a
// parameter, whether it had one. Mechanisms whose parameter is updated in place (IBM Kyber,
// IBM BTC derive) are not supported.
func (r *Response) ParamUpdate(m Mechanism) {
	if r.begin("P") {
		r.paramUpdate(m)
	}
}

// Bytes returns the reply body, or the first error of the methods called.
func (r *Response) Bytes() ([]byte, error) { return r.bytes() }

// RequestWriter builds a request body (the client side, for tests and fuzzers). Its methods
// mirror the accessors of Request and must be called in signature order.
type RequestWriter struct {
	writer
}

// NewRequest starts a request for call from a client that offered proto, which selects the
// layout of M arguments and NULL byte arrays.
func NewRequest(call Call, proto Protocol) *RequestWriter {
	sig, ok := call.RequestSignature()
	if !ok {
		w := &RequestWriter{newWriter(call, "", proto)}
		w.err = fmt.Errorf("%w: %d is not a request", ErrUnknownCall, uint32(call))
		return w
	}
	return &RequestWriter{newWriter(call, sig, proto)}
}

// NullByteArray writes an ay argument for a NULL pointer, in the form of the protocol version.
func (w *RequestWriter) NullByteArray() {
	if !w.begin("ay") {
		return
	}
	if w.proto == Protocol0 {
		w.b.AddUint8(0)
		w.b.AddUint32(0)
		return
	}
	w.b.AddUint8(1)
	w.b.AddUint32(nullLength)
}

// Zstring writes a z argument.
func (w *RequestWriter) Zstring(s string) {
	if w.begin("z") {
		w.raw(append([]byte{}, s...))
	}
}

// NullZstring writes a z argument for a NULL pointer.
func (w *RequestWriter) NullZstring() {
	if w.begin("z") {
		w.b.AddUint32(nullLength)
	}
}

// BufferSize writes an fy argument.
func (w *RequestWriter) BufferSize(n uint32) {
	if w.begin("fy") {
		w.b.AddUint32(n)
	}
}

// UlongBufferSize writes an fu argument.
func (w *RequestWriter) UlongBufferSize(n uint32) {
	if w.begin("fu") {
		w.b.AddUint32(n)
	}
}

// AttributeRequests writes an fA argument.
func (w *RequestWriter) AttributeRequests(reqs []AttributeRequest) {
	if !w.begin("fA") || !w.count(len(reqs)) {
		return
	}
	for i, a := range reqs {
		if isNestedTemplate(a.Type) {
			w.fail(ErrNestedTemplate, "attribute %d is %s", i, attributeName(a.Type))
			return
		}
		w.b.AddUint32(a.Type)
		w.b.AddUint32(a.Capacity)
	}
}

// Attributes writes an aA argument: a template with values in host-memory form.
func (w *RequestWriter) Attributes(attrs []Attribute) {
	if !w.begin("aA") || !w.count(len(attrs)) {
		return
	}
	for i := range attrs {
		w.attributeValue(i, attrs[i].Type, attrs[i].Value)
	}
}

// Mechanism writes an M argument in the layout of the protocol version.
func (w *RequestWriter) Mechanism(m Mechanism) {
	if w.begin("M") {
		w.mechanism(m)
	}
}

// Bytes returns the request body, or the first error of the methods called.
func (w *RequestWriter) Bytes() ([]byte, error) { return w.bytes() }

// ResponseReader is a decoded reply body (the client side, for tests and fuzzers). Its
// accessors mirror the methods of Response and must be called in signature order.
type ResponseReader struct {
	reader
	// Call is the call id.
	Call Call
}

// ParseResponse reads the call id and signature of a reply to call from a server, for a client
// that offered proto. An ERROR reply is returned as an *ErrorReply error.
func ParseResponse(body []byte, call Call, proto Protocol) (*ResponseReader, error) {
	s, got, sig, err := readHeader(body)
	if err != nil {
		return nil, err
	}
	if got == CallError {
		if err := checkSignature(got, sig, "u"); err != nil {
			return nil, err
		}
		var rv uint64
		if !s.ReadUint64(&rv) {
			return nil, fmt.Errorf("%w: ERROR reply without rv", ErrMalformed)
		}
		if rv == 0 {
			return nil, fmt.Errorf("%w: ERROR reply with rv CKR_OK", ErrMalformed)
		}
		return nil, &ErrorReply{RV: rv}
	}
	if got != call {
		return nil, fmt.Errorf("%w: reply to %s carries call id %d", ErrCallMismatch, call, uint32(got))
	}
	want, ok := call.ResponseSignature()
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCall, uint32(call))
	}
	if err := checkSignature(call, sig, want); err != nil {
		return nil, err
	}
	return &ResponseReader{reader: reader{s: s, call: call, sig: want, proto: proto.layout()}, Call: call}, nil
}

// ByteArray reads an ay argument. When the server sent the bytes, b holds them (non-nil, maybe
// empty) and size is len(b); when it sent a length only (valid = 0: a length query's answer or
// a buffer too small), b is nil and size is the length it needs.
func (r *ResponseReader) ByteArray() (b []byte, size uint32, err error) {
	if !r.begin("ay") {
		return nil, 0, r.err
	}
	valid, ok := r.flag("valid")
	if !ok {
		return nil, 0, r.err
	}
	if !valid {
		if !r.u32(&size) {
			return nil, 0, r.err
		}
		return nil, size, nil
	}
	if b, ok = r.raw(); !ok {
		return nil, 0, r.err
	}
	if b == nil {
		b = []byte{}
	}
	return b, uint32(len(b)), nil
}

// UlongArray reads an au argument, with the same convention as ByteArray.
func (r *ResponseReader) UlongArray() (v []uint64, size uint32, err error) {
	if !r.begin("au") {
		return nil, 0, r.err
	}
	valid, ok := r.flag("valid")
	if !ok {
		return nil, 0, r.err
	}
	if !valid {
		if !r.u32(&size) {
			return nil, 0, r.err
		}
		return nil, size, nil
	}
	n, ok := r.count(8)
	if !ok {
		return nil, 0, r.err
	}
	v = make([]uint64, n)
	for i := range v {
		if !r.u64(&v[i]) {
			return nil, 0, r.err
		}
	}
	return v, uint32(n), nil
}

// Attributes reads the aA argument of a C_GetAttributeValue reply and interprets it the way
// the C client does with the buffers described by reqs (the fA of the request): count and types
// must match, and a valid attribute is SizeOnly when the buffer was NULL or too small. With nil
// reqs every buffer is taken as large enough and nothing is matched.
func (r *ResponseReader) Attributes(reqs []AttributeRequest) ([]AttributeResult, error) {
	if !r.begin("aA") {
		return nil, r.err
	}
	n, ok := r.count(5)
	if !ok {
		return nil, r.err
	}
	if reqs != nil && n != len(reqs) {
		r.fail(ErrMalformed, "%d attributes for %d requested", n, len(reqs))
		return nil, r.err
	}
	out := make([]AttributeResult, n)
	for i := range out {
		var req *AttributeRequest
		if reqs != nil {
			req = &reqs[i]
		}
		if !r.attributeResult(i, req, &out[i]) {
			return nil, r.err
		}
	}
	return out, nil
}

// ParamUpdate reads the P argument of a C_DeriveKey2 reply for a request whose mechanism was
// mechType: whether the mechanism had a parameter.
func (r *ResponseReader) ParamUpdate(mechType uint32) (present bool, err error) {
	if !r.begin("P") {
		return false, r.err
	}
	present, ok := r.paramUpdate(mechType)
	if !ok {
		return false, r.err
	}
	return present, nil
}
