package p11rpc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
)

// reencodeError reports that a message decoded but could not be encoded again: an oracle
// failure, unlike a decoding error.
type reencodeError struct{ err error }

func (e *reencodeError) Error() string { return "decoded but not re-encoded: " + e.err.Error() }
func (e *reencodeError) Unwrap() error { return e.err }

// walkRequest reads every argument of r by its signature letters with the typed accessors and
// writes each back with the client-side encoder: the round-trip oracle of FuzzParseRequest.
// It returns the decoded values too, for tests that check them.
func walkRequest(r *Request) (body []byte, values []any, err error) {
	letters, err := splitSignature(r.Signature())
	if err != nil {
		return nil, nil, err
	}
	w := NewRequest(r.Call, r.Protocol)
	for _, l := range letters {
		var v any
		switch l {
		case "y":
			b, err := r.Byte()
			if err != nil {
				return nil, nil, err
			}
			w.Byte(b)
			v = b
		case "u":
			u, err := r.Ulong()
			if err != nil {
				return nil, nil, err
			}
			w.Ulong(u)
			v = u
		case "s":
			s, err := r.String()
			if err != nil {
				return nil, nil, err
			}
			w.String(s, len(s))
			v = s
		case "z":
			s, null, err := r.Zstring()
			if err != nil {
				return nil, nil, err
			}
			if null {
				w.NullZstring()
				v = nil
			} else {
				w.Zstring(s)
				v = s
			}
		case "ay":
			b, null, err := r.ByteArray()
			if err != nil {
				return nil, nil, err
			}
			if null {
				w.NullByteArray()
				v = nil
			} else {
				w.ByteArray(b)
				v = b
			}
		case "fy":
			n, err := r.BufferSize()
			if err != nil {
				return nil, nil, err
			}
			w.BufferSize(n)
			v = n
		case "fu":
			n, err := r.UlongBufferSize()
			if err != nil {
				return nil, nil, err
			}
			w.UlongBufferSize(n)
			v = n
		case "fA":
			reqs, err := r.AttributeRequests()
			if err != nil {
				return nil, nil, err
			}
			w.AttributeRequests(reqs)
			v = reqs
		case "aA":
			attrs, err := r.Attributes()
			if err != nil {
				return nil, nil, err
			}
			w.Attributes(attrs)
			v = attrs
		case "M":
			m, err := r.Mechanism()
			if err != nil {
				return nil, nil, err
			}
			w.Mechanism(m)
			v = m
		default:
			return nil, nil, fmt.Errorf("letter %q in a request", l)
		}
		values = append(values, v)
	}
	if err := r.Done(); err != nil {
		return nil, nil, err
	}
	body, err = w.Bytes()
	if err != nil {
		return nil, nil, &reencodeError{err}
	}
	return body, values, nil
}

// walkResponse reads every argument of a reply by its signature letters and writes each back
// with the server-side encoder. Attribute arrays are read with nil requests and P for
// CKM_ECDH1_DERIVE.
func walkResponse(r *ResponseReader, proto Protocol) (body []byte, values []any, err error) {
	letters, err := splitSignature(r.Signature())
	if err != nil {
		return nil, nil, err
	}
	w := NewResponse(r.Call, proto)
	for _, l := range letters {
		var v any
		switch l {
		case "u":
			u, err := r.Ulong()
			if err != nil {
				return nil, nil, err
			}
			w.Ulong(u)
			v = u
		case "v":
			major, minor, err := r.Version()
			if err != nil {
				return nil, nil, err
			}
			w.Version(major, minor)
			v = [2]byte{major, minor}
		case "s":
			s, err := r.String()
			if err != nil {
				return nil, nil, err
			}
			w.String(s, len(s))
			v = s
		case "ay":
			b, size, err := r.ByteArray()
			if err != nil {
				return nil, nil, err
			}
			if b == nil {
				w.ByteArrayLength(size)
			} else {
				w.ByteArray(b)
			}
			v = [2]any{b, size}
		case "au":
			u, size, err := r.UlongArray()
			if err != nil {
				return nil, nil, err
			}
			if u == nil {
				w.UlongArrayLength(size)
			} else {
				w.UlongArray(u)
			}
			v = [2]any{u, size}
		case "aA":
			res, err := r.Attributes(nil)
			if err != nil {
				return nil, nil, err
			}
			w.Attributes(res)
			v = res
		case "P":
			present, err := r.ParamUpdate(ckmECDH1Derive)
			if err != nil {
				return nil, nil, err
			}
			m := Mechanism{Type: ckmECDH1Derive}
			if present {
				m.Param = ECDH1DeriveParams{}
			}
			w.ParamUpdate(m)
			v = present
		default:
			return nil, nil, fmt.Errorf("letter %q in a reply", l)
		}
		values = append(values, v)
	}
	if err := r.Done(); err != nil {
		return nil, nil, err
	}
	body, err = w.Bytes()
	if err != nil {
		return nil, nil, &reencodeError{err}
	}
	return body, values, nil
}

// buildRequest encodes a request with fill, failing the test or fuzz setup on error.
func buildRequest(tb testing.TB, call Call, proto Protocol, fill func(w *RequestWriter)) []byte {
	tb.Helper()
	w := NewRequest(call, proto)
	fill(w)
	b, err := w.Bytes()
	if err != nil {
		tb.Fatalf("building %s: %v", call, err)
	}
	return b
}

// callMixRequests are the requests of the calls pkcs11-tool --sign, p11tool --test-sign,
// ssh-keygen -D and NSS certutil -K make (§3, observed call mix), encoded with the client
// encoder for each protocol version.
func callMixRequests(tb testing.TB, proto Protocol) [][]byte {
	const session, slot, key = 0x11, 0x11, 0x3
	digest := bytes.Repeat([]byte{0xab}, 32)
	pss := Mechanism{Type: ckmRSAPKCSPSS, Param: PSSParams{HashAlg: 0x250, MGF: 2, SaltLen: 32}}
	reqs := []struct {
		call Call
		fill func(w *RequestWriter)
	}{
		{CallInitialize, func(w *RequestWriter) {
			w.ByteArray([]byte(rpcHandshake))
			w.Byte(0)
			w.ByteArray([]byte{0})
		}},
		{CallGetInfo, func(w *RequestWriter) {}},
		{CallGetSlotList, func(w *RequestWriter) { w.Byte(1); w.UlongBufferSize(0) }},
		{CallGetSlotList, func(w *RequestWriter) { w.Byte(1); w.UlongBufferSize(1) }},
		{CallGetSlotInfo, func(w *RequestWriter) { w.Ulong(slot) }},
		{CallGetTokenInfo, func(w *RequestWriter) { w.Ulong(slot) }},
		{CallGetMechanismList, func(w *RequestWriter) { w.Ulong(slot); w.UlongBufferSize(0) }},
		{CallGetMechanismList, func(w *RequestWriter) { w.Ulong(slot); w.UlongBufferSize(70) }},
		{CallGetMechanismInfo, func(w *RequestWriter) { w.Ulong(slot); w.Ulong(0x1041) }},
		{CallOpenSession, func(w *RequestWriter) { w.Ulong(slot); w.Ulong(0x6) }},
		{CallGetSessionInfo, func(w *RequestWriter) { w.Ulong(session) }},
		{CallLogin, func(w *RequestWriter) { w.Ulong(session); w.Ulong(1); w.ByteArray([]byte("123456")) }},
		{CallLogin, func(w *RequestWriter) { w.Ulong(session); w.Ulong(1); w.NullByteArray() }},
		{CallFindObjectsInit, func(w *RequestWriter) {
			w.Ulong(session)
			w.Attributes([]Attribute{UlongAttribute(0x0, 3), BytesAttribute(0x102, []byte{1})})
		}},
		{CallFindObjectsInit, func(w *RequestWriter) {
			w.Ulong(session)
			w.Attributes([]Attribute{UlongAttribute(0x0, 0xce534354), BoolAttribute(0x1, true)})
		}},
		{CallFindObjectsInit, func(w *RequestWriter) {
			w.Ulong(session)
			w.Attributes([]Attribute{UlongAttribute(0xce536358, 1), BytesAttribute(0x3, nil)})
		}},
		{CallFindObjects, func(w *RequestWriter) { w.Ulong(session); w.UlongBufferSize(30) }},
		{CallFindObjectsFinal, func(w *RequestWriter) { w.Ulong(session) }},
		{CallGetAttributeValue, func(w *RequestWriter) {
			w.Ulong(session)
			w.Ulong(key)
			w.AttributeRequests([]AttributeRequest{{0x202, 1}})
		}},
		{CallGetAttributeValue, func(w *RequestWriter) {
			w.Ulong(session)
			w.Ulong(key)
			w.AttributeRequests([]AttributeRequest{{0x102, 0}, {0x120, 0}, {0x122, 0}, {0x40000600, 0}})
		}},
		{CallGetAttributeValue, func(w *RequestWriter) {
			w.Ulong(session)
			w.Ulong(key)
			w.AttributeRequests([]AttributeRequest{{0x0, 8}, {0x100, 8}, {0x3, 64}, {0x180, 256}, {0x181, 256}})
		}},
		{CallSignInit, func(w *RequestWriter) { w.Ulong(session); w.Mechanism(Mechanism{Type: 0x1}); w.Ulong(key) }},
		{CallSignInit, func(w *RequestWriter) { w.Ulong(session); w.Mechanism(Mechanism{Type: 0x1041}); w.Ulong(key) }},
		{CallSignInit, func(w *RequestWriter) { w.Ulong(session); w.Mechanism(pss); w.Ulong(key) }},
		{CallSign, func(w *RequestWriter) { w.Ulong(session); w.ByteArray(digest); w.BufferSize(0) }},
		{CallSign, func(w *RequestWriter) { w.Ulong(session); w.ByteArray(digest); w.BufferSize(256) }},
		{CallVerifyInit, func(w *RequestWriter) { w.Ulong(session); w.Mechanism(Mechanism{Type: 0x1041}); w.Ulong(key) }},
		{CallVerify, func(w *RequestWriter) { w.Ulong(session); w.ByteArray(digest); w.ByteArray(make([]byte, 64)) }},
		{CallDecryptInit, func(w *RequestWriter) {
			w.Ulong(session)
			w.Mechanism(Mechanism{Type: ckmRSAPKCSOAEP, Param: OAEPParams{HashAlg: 0x250, MGF: 2, Source: 1}})
			w.Ulong(key)
		}},
		{CallDecrypt, func(w *RequestWriter) { w.Ulong(session); w.ByteArray(make([]byte, 256)); w.BufferSize(0) }},
		{CallGenerateKeyPair, func(w *RequestWriter) {
			w.Ulong(session)
			w.Mechanism(Mechanism{Type: 0x1040})
			w.Attributes([]Attribute{BoolAttribute(0x1, true), BytesAttribute(0x180, mustHex("06082a8648ce3d030107"))})
			w.Attributes([]Attribute{BoolAttribute(0x1, true), BoolAttribute(0x2, true), BoolAttribute(0x108, true), BytesAttribute(0x102, []byte{2})})
		}},
		{CallGenerateRandom, func(w *RequestWriter) { w.Ulong(session); w.BufferSize(32) }},
		{CallGenerateRandom, func(w *RequestWriter) { w.Ulong(session); w.BufferSize(0) }},
		{CallSeedRandom, func(w *RequestWriter) { w.Ulong(session); w.ByteArray(digest) }},
		{CallLogout, func(w *RequestWriter) { w.Ulong(session) }},
		{CallCloseSession, func(w *RequestWriter) { w.Ulong(session) }},
		{CallCloseAllSessions, func(w *RequestWriter) { w.Ulong(slot) }},
		{CallWaitForSlotEvent, func(w *RequestWriter) { w.Ulong(1) }},
		{CallInitToken, func(w *RequestWriter) { w.Ulong(slot); w.ByteArray([]byte("12345678")); w.Zstring("tokenlab") }},
		{CallFinalize, func(w *RequestWriter) {}},
	}
	if proto >= Protocol1 {
		// Calls a client makes only after a server answered version 1 or 2; the server
		// still decodes them to answer CKR_FUNCTION_NOT_SUPPORTED.
		reqs = append(reqs, []struct {
			call Call
			fill func(w *RequestWriter)
		}{
			{CallInitToken2, func(w *RequestWriter) { w.Ulong(slot); w.ByteArray([]byte("12345678")); w.String("tokenlab", 32) }},
			{CallLoginUser, func(w *RequestWriter) {
				w.Ulong(session)
				w.Ulong(1)
				w.ByteArray([]byte("123456"))
				w.ByteArray([]byte("alice"))
			}},
			{CallMessageSignInit, func(w *RequestWriter) { w.Ulong(session); w.Mechanism(Mechanism{Type: 0x1041}); w.Ulong(key) }},
		}...)
	}
	var out [][]byte
	for _, r := range reqs {
		out = append(out, buildRequest(tb, r.call, proto, r.fill))
	}
	if proto >= Protocol1 {
		out = append(out,
			buildRequest(tb, CallDeriveKey, proto, func(w *RequestWriter) {
				w.Ulong(session)
				w.Mechanism(Mechanism{Type: ckmECDH1Derive, Param: ECDH1DeriveParams{KDF: 1, PublicData: mustHex("04" + "11223344")}})
				w.Ulong(key)
				w.Attributes([]Attribute{UlongAttribute(0x0, 4), UlongAttribute(0x100, 0x10), BoolAttribute(0x162, true)})
			}),
			buildRequest(tb, CallSignInit, proto, func(w *RequestWriter) {
				w.Ulong(session)
				w.Mechanism(Mechanism{Type: NullMechanism})
				w.Ulong(0)
			}),
		)
	}
	return out
}

func FuzzReadFrame(f *testing.F) {
	f.Add(firstRequestFrame)
	f.Add(append(append([]byte{}, firstRequestFrame...), firstReplyFrame...))
	for i, c := range captures {
		frame, err := AppendFrame(nil, Frame{Code: uint32(0x10 + i), Options: []byte("client"), Body: mustHex(c.hex)})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add(mustHex("00000010 00000000 ffffffff"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for {
			start := len(stream) - r.Len()
			fr, err := ReadFrame(r, 4096)
			if err != nil {
				if err == io.EOF && start != len(stream) {
					t.Fatalf("io.EOF with %d bytes left", len(stream)-start)
				}
				return
			}
			end := len(stream) - r.Len()
			out, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("frame read but not written: %v", err)
			}
			if !bytes.Equal(out, stream[start:end]) {
				t.Fatalf("round trip\n in % x\nout % x", stream[start:end], out)
			}
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, c := range captures {
		if !c.reply {
			for _, p := range []Protocol{Protocol0, Protocol1, Protocol2} {
				f.Add(byte(p), mustHex(c.hex))
			}
		}
	}
	for _, p := range []Protocol{Protocol0, Protocol1, Protocol2} {
		for _, b := range callMixRequests(f, p) {
			f.Add(byte(p), b)
		}
	}
	f.Fuzz(func(t *testing.T, proto byte, body []byte) {
		r, err := ParseRequest(body, Protocol(proto))
		if err != nil {
			if r != nil {
				t.Fatal("request and error")
			}
			return
		}
		out, values, err := walkRequest(r)
		var re *reencodeError
		if errors.As(err, &re) {
			t.Fatalf("%s (protocol %d): %v\n% x", r.Call, proto, err, body)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTrailingBytes) &&
				!errors.Is(err, ErrNestedTemplate) && !errors.Is(err, ErrUnsupportedMechanism) &&
				!errors.Is(err, ErrInvalidAttribute) && !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !bytes.Equal(out, body) {
			t.Fatalf("%s (protocol %d) round trip\n in % x\nout % x", r.Call, proto, body, out)
		}
		r2, err := ParseRequest(out, Protocol(proto))
		if err != nil {
			t.Fatal(err)
		}
		_, values2, err := walkRequest(r2)
		if err != nil || !reflect.DeepEqual(values, values2) {
			t.Fatalf("re-decode differs: %v\n%#v\n%#v", err, values, values2)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, c := range captures {
		if c.reply {
			f.Add(uint32(c.call), byte(0), mustHex(c.hex))
		}
	}
	f.Fuzz(func(t *testing.T, call uint32, proto byte, body []byte) {
		r, err := ParseResponse(body, Call(call), Protocol(proto))
		if err != nil {
			return
		}
		out, values, err := walkResponse(r, Protocol(proto))
		var re *reencodeError
		if errors.As(err, &re) {
			t.Fatalf("%s (protocol %d): %v\n% x", r.Call, proto, err, body)
		}
		if err != nil {
			return
		}
		r2, err := ParseResponse(out, Call(call), Protocol(proto))
		if err != nil {
			t.Fatalf("re-encoded reply does not parse: %v\n% x", err, out)
		}
		_, values2, err := walkResponse(r2, Protocol(proto))
		if err != nil || !reflect.DeepEqual(values, values2) {
			t.Fatalf("re-decode differs: %v\n%#v\n%#v", err, values, values2)
		}
	})
}
