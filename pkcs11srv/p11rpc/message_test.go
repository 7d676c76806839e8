package p11rpc

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestCapturedRequests decodes every captured request byte for byte and re-encodes it with
// the client encoder.
func TestCapturedRequests(t *testing.T) {
	want := map[string][]any{
		"C_Initialize request":     {[]byte(rpcHandshake), byte(0), []byte{0}},
		"C_Finalize request":       nil,
		"C_GetSlotList size query": {byte(0), uint32(0)},
		"C_GetSlotList request":    {byte(0), uint32(1)},
		"C_SignInit RSA-PKCS-PSS": {uint64(0x11),
			Mechanism{Type: 0x0d, Param: PSSParams{HashAlg: 0x250, MGF: 2, SaltLen: 0x20}}, uint64(3)},
		"C_GetAttributeValue size-only request": {uint64(0x11), uint64(3),
			[]AttributeRequest{{0x102, 0}, {0x120, 0}, {0x122, 0}}},
		"C_WaitForSlotEvent(CKF_DONT_BLOCK)": {uint64(1)},
		"C_FindObjectsInit CLASS=PRIVATE_KEY ID=01": {uint64(0x11),
			[]Attribute{{Type: 0, Value: []byte{3, 0, 0, 0, 0, 0, 0, 0}}, {Type: 0x102, Value: []byte{1}}}},
	}
	for _, c := range captures {
		if c.reply {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			body := mustHex(c.hex)
			r, err := ParseRequest(body, Protocol0)
			if err != nil {
				t.Fatal(err)
			}
			if r.Call != c.call {
				t.Fatalf("call %s, want %s", r.Call, c.call)
			}
			out, values, err := walkRequest(r)
			if err != nil {
				t.Fatal(err)
			}
			w, ok := want[c.name]
			if !ok {
				t.Fatalf("no expected values for %q", c.name)
			}
			if !reflect.DeepEqual(values, w) {
				t.Errorf("decoded\n%#v\nwant\n%#v", values, w)
			}
			if !bytes.Equal(out, body) {
				t.Errorf("re-encoded\n% x\nwant\n% x", out, body)
			}
		})
	}
}

// TestCapturedReplies builds every captured reply with the server encoder and decodes it with
// the client decoder.
func TestCapturedReplies(t *testing.T) {
	sizeOnlyReqs := []AttributeRequest{{0x102, 0}, {0x120, 0}, {0x122, 0}}
	tests := []struct {
		name  string
		build func(r *Response)
		check func(t *testing.T, r *ResponseReader)
	}{
		{"C_Initialize reply", func(r *Response) {}, func(t *testing.T, r *ResponseReader) {}},
		{"C_Finalize reply", func(r *Response) {}, func(t *testing.T, r *ResponseReader) {}},
		{"C_GetSlotList size reply", func(r *Response) { r.UlongArrayLength(1) }, func(t *testing.T, r *ResponseReader) {
			v, n, err := r.UlongArray()
			if err != nil || v != nil || n != 1 {
				t.Errorf("got %v %d %v", v, n, err)
			}
		}},
		{"C_GetSlotList reply", func(r *Response) { r.UlongArray([]uint64{0x11}) }, func(t *testing.T, r *ResponseReader) {
			v, n, err := r.UlongArray()
			if err != nil || !reflect.DeepEqual(v, []uint64{0x11}) || n != 1 {
				t.Errorf("got %v %d %v", v, n, err)
			}
		}},
		{"C_Sign size-query reply", func(r *Response) { r.ByteArrayLength(256) }, func(t *testing.T, r *ResponseReader) {
			b, n, err := r.ByteArray()
			if err != nil || b != nil || n != 256 {
				t.Errorf("got %v %d %v", b, n, err)
			}
		}},
		{"C_GetAttributeValue size-only reply", func(r *Response) {
			r.Attributes([]AttributeResult{
				{Type: 0x102, Kind: ResultSizeOnly, Size: 1},
				{Type: 0x120, Kind: ResultSizeOnly, Size: 256},
				{Type: 0x122, Kind: ResultSizeOnly, Size: 3},
			})
			r.Ulong(0)
		}, func(t *testing.T, r *ResponseReader) {
			res, err := r.Attributes(sizeOnlyReqs)
			want := []AttributeResult{
				{Type: 0x102, Kind: ResultSizeOnly, Size: 1},
				{Type: 0x120, Kind: ResultSizeOnly, Size: 256},
				{Type: 0x122, Kind: ResultSizeOnly, Size: 3},
			}
			if err != nil || !reflect.DeepEqual(res, want) {
				t.Errorf("got %+v %v", res, err)
			}
			if rv, err := r.Ulong(); rv != 0 || err != nil {
				t.Errorf("rv %#x %v", rv, err)
			}
		}},
	}
	byName := map[string]capture{}
	for _, c := range captures {
		byName[c.name] = c
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := byName[tc.name]
			want := mustHex(c.hex)
			w := NewResponse(c.call, Protocol0)
			tc.build(w)
			got, err := w.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n% x\nwant\n% x", got, want)
			}
			r, err := ParseResponse(want, c.call, Protocol0)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, r)
			if err := r.Done(); err != nil {
				t.Error(err)
			}
		})
	}

	// ERROR replies, captured for C_DecryptInit (OAEP) and C_WaitForSlotEvent.
	for _, tc := range []struct {
		call Call
		rv   uint64
		hex  string
	}{
		{CallDecryptInit, 0x07, byName["ERROR CKR_ARGUMENTS_BAD"].hex},
		{CallWaitForSlotEvent, 0x54, "00000000 00000001 75 0000000000000054"},
	} {
		want := mustHex(tc.hex)
		if got := ErrorBody(tc.rv); !bytes.Equal(got, want) {
			t.Errorf("ErrorBody(%#x) = % x", tc.rv, got)
		}
		_, err := ParseResponse(want, tc.call, Protocol0)
		var e *ErrorReply
		if !errors.As(err, &e) || e.RV != tc.rv {
			t.Errorf("ParseResponse of ERROR %#x: %v", tc.rv, err)
		}
	}
	if got := ErrorBody(0); !bytes.Equal(got, mustHex("00000000 00000001 75 0000000000000005")) {
		t.Errorf("ErrorBody(0) = % x, want CKR_GENERAL_ERROR", got)
	}
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		is   error
		msg  string
	}{
		{"empty", "", ErrMalformed, "no call id"},
		{"short call id", "0000", ErrMalformed, "no call id"},
		{"no signature", "00000002", ErrMalformed, "no signature"},
		{"signature cut", "0000002b 00000005 7561", ErrMalformed, "truncated"},
		{"NULL signature", "00000002 ffffffff", ErrMalformed, "signature length"},
		{"signature length 0x7fffffff", "00000002 7fffffff", ErrMalformed, "signature length"},
		{"ERROR as request", "00000000 00000001 75 0000000000000007", ErrUnknownCall, "0 is not a request"},
		{"call 90", "0000005a 00000000", ErrUnknownCall, "90"},
		{"call 0xffffffff", "ffffffff 00000000", ErrUnknownCall, "4294967295"},
		{"wrong signature", "0000002b 00000003 756179 0000000000000011 01 00000000", ErrSignatureMismatch, `C_Sign carries signature "uay" instead of "uayfy"`},
		{"signature for another call", "00000002 00000001 75", ErrSignatureMismatch, "C_Finalize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(mustHex(tc.hex), Protocol0)
			if r != nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, %v; want %v saying %q", r, err, tc.is, tc.msg)
			}
		})
	}
}

// signOf prefixes args with a C_Sign call id and signature.
const signOf = "0000002b 00000005 7561796679 0000000000000011 "

// findOf prefixes args with a C_FindObjectsInit call id, signature and session.
const findOf = "0000001a 00000003 756141 0000000000000011 "

// getAttrOf prefixes args with a C_GetAttributeValue call id, signature, session and object.
const getAttrOf = "00000018 00000004 75756641 0000000000000011 0000000000000003 "

func TestRequestArgumentErrors(t *testing.T) {
	tests := []struct {
		name  string
		proto Protocol
		hex   string
		is    error
		msg   string
		rv    uint64
	}{
		{"truncated ulong", Protocol0, "0000002b 00000005 7561796679 00000000", ErrMalformed, "argument 1 (u): truncated", 0x30},
		{"array length 0x7fffffff", Protocol0, signOf + "01 7fffffff", ErrMalformed, "over the limit", 0x30},
		{"array length 0x80000000", Protocol0, signOf + "01 80000000", ErrMalformed, "over the limit", 0x30},
		{"array cut", Protocol0, signOf + "01 00000010 abcd", ErrMalformed, "array of 16 bytes truncated to 2", 0x30},
		{"valid byte 2", Protocol0, signOf + "02 00000000 00000000", ErrMalformed, "valid byte is 2", 0x30},
		{"NULL with a length", Protocol0, signOf + "00 00000005 00000000", ErrInvalidArgument, "NULL buffer with length 5", 0x07},
		{"0.25 NULL from a 0.24 client", Protocol0, signOf + "01 ffffffff 00000000", ErrMalformed, "offered version 0", 0x30},
		{"0.24 NULL from a 0.25 client", Protocol1, signOf + "00 00000000 00000000", ErrMalformed, "offered version 1", 0x30},
		{"trailing bytes", Protocol0, signOf + "01 00000001 aa 00000100 ff", ErrTrailingBytes, "1 bytes after", 0x30},
		{"fy cut", Protocol0, signOf + "01 00000001 aa 0000", ErrMalformed, "argument 3 (fy): truncated", 0x30},
		{"attribute count too large", Protocol0, findOf + "ffffffff 00000000", ErrMalformed, "count 4294967295 does not fit", 0x30},
		{"WRAP_TEMPLATE in a template", Protocol0, findOf + "00000001 40000211 01 00000018 00000001 00000000 01 00000008 0000000000000004",
			ErrNestedTemplate, "CKA_WRAP_TEMPLATE (0x40000211)", 0x12},
		{"UNWRAP_TEMPLATE marked unavailable", Protocol0, findOf + "00000001 40000212 00", ErrInvalidArgument, "unavailable", 0x07},
		{"DERIVE_TEMPLATE as a raw dump", Protocol0, findOf + "00000001 40000213 01 00000018" + strings.Repeat("00", 24),
			ErrNestedTemplate, "CKA_DERIVE_TEMPLATE", 0x12},
		{"future standard array type", Protocol2, findOf + "00000001 40000300 01 00000000 00000000", ErrNestedTemplate, "0x40000300", 0x12},
		{"unavailable in a template", Protocol0, findOf + "00000001 00000003 00", ErrInvalidArgument, "marked unavailable", 0x07},
		{"BBOOL of length 0", Protocol0, findOf + "00000001 00000001 01 00000000 01", ErrInvalidAttribute, "CKA_TOKEN (0x1), is a CK_BBOOL but has length 0, not 1", 0x13},
		{"ULONG of length 4", Protocol0, findOf + "00000001 00000000 01 00000004 0000000000000003", ErrInvalidAttribute, "CKA_CLASS (0x0), is a CK_ULONG but has length 4, not 8", 0x13},
		{"date of 7 bytes", Protocol0, findOf + "00000001 00000110 01 00000007 00000007 32303236303130", ErrInvalidAttribute, "date of 7 bytes", 0x13},
		{"NULL label with a length", Protocol0, findOf + "00000001 00000003 01 00000005 ffffffff", ErrInvalidAttribute, "NULL value with length 5", 0x13},
		{"byte array length disagrees", Protocol0, findOf + "00000001 00000003 01 00000002 00000001 41", ErrInvalidAttribute, "has length 2 but 1 value bytes", 0x13},
		{"mechanism array length disagrees", Protocol0, findOf + "00000001 40000600 01 00000009 00000001 0000000000001041", ErrInvalidAttribute, "length 9", 0x13},
		{"mechanism count too large", Protocol0, findOf + "00000001 40000600 01 00000008 00000002 0000000000001041", ErrMalformed, "count 2", 0x30},
		{"fA nested with a buffer", Protocol1, getAttrOf + "00000001 40000211 00000030", ErrNestedTemplate, "CKA_WRAP_TEMPLATE", 0x12},
		{"fA nested size query", Protocol0, getAttrOf + "00000001 40000212 00000000", ErrNestedTemplate, "CKA_UNWRAP_TEMPLATE", 0x12},
		{"fA count too large", Protocol0, getAttrOf + "00000002 00000003 00000010", ErrMalformed, "count 2", 0x30},
		{"unknown parameter layout, new M layout", Protocol2,
			"0000001d 00000003 754d75 0000000000000011 00001087 01 00000000", ErrUnsupportedMechanism, "CKM_AES_GCM (0x1087)", 0x70},
		{"unknown parameter layout, 0.25.0 M layout", Protocol1,
			"0000001d 00000003 754d75 0000000000000011 00001082 00000010" + strings.Repeat("00", 16) + "0000000000000003",
			ErrUnsupportedMechanism, "CKM_AES_CBC (0x1082)", 0x70},
		{"parameter of an unlisted mechanism, new M layout", Protocol2,
			"0000001d 00000003 754d75 0000000000000011 80001234 01 00000000", ErrUnsupportedMechanism, "mechanism 0x80001234", 0x70},
		{"presence byte 2", Protocol2, "0000002a 00000003 754d75 0000000000000011 0000000d 02", ErrMalformed, "parameter presence byte is 2", 0x30},
		{"PSS parameter cut", Protocol0, "0000002a 00000003 754d75 0000000000000011 0000000d 0000000000000250", ErrMalformed, "argument 2 (M): truncated", 0x30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(mustHex(tc.hex), tc.proto)
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			_, _, err = walkRequest(r)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v; want %v saying %q", err, tc.is, tc.msg)
			}
			if rv := ErrorRV(err); rv != tc.rv {
				t.Errorf("ErrorRV = %#x, want %#x", rv, tc.rv)
			}
		})
	}
}

func TestAccessorOrder(t *testing.T) {
	r, err := ParseRequest(mustHex(signOf+"01 00000001 aa 00000100"), Protocol0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Done(); !errors.Is(err, ErrOutOfOrder) || !strings.Contains(err.Error(), `"uayfy" of signature`) {
		t.Errorf("Done before reading: %v", err)
	}
	if _, _, err := r.ByteArray(); !errors.Is(err, ErrOutOfOrder) || !strings.Contains(err.Error(), `read "ay" as argument 1`) {
		t.Fatalf("ByteArray first: %v", err)
	}
	// The failure sticks.
	if _, err := r.Ulong(); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("after a failure: %v", err)
	}

	w := NewResponse(CallSign, Protocol0)
	w.Ulong(1)
	if _, err := w.Bytes(); !errors.Is(err, ErrOutOfOrder) || !strings.Contains(err.Error(), `wrote "u" as argument 1`) {
		t.Errorf("response out of order: %v", err)
	}
	w = NewResponse(CallGetAttributeValue, Protocol0)
	w.Attributes(nil)
	if _, err := w.Bytes(); !errors.Is(err, ErrOutOfOrder) || !strings.Contains(err.Error(), `"u" of signature "aAu" not written`) {
		t.Errorf("response incomplete: %v", err)
	}
	if _, err := NewResponse(Call(90), Protocol0).Bytes(); !errors.Is(err, ErrUnknownCall) {
		t.Errorf("response to call 90: %v", err)
	}
	if _, err := NewRequest(CallError, Protocol0).Bytes(); !errors.Is(err, ErrUnknownCall) {
		t.Errorf("ERROR request: %v", err)
	}
}

// TestLetterRoundTrip encodes each letter with the client encoder and decodes it, byte for byte.
func TestLetterRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		proto Protocol
		call  Call
		fill  func(w *RequestWriter)
		hex   string // the arguments after call id and signature
	}{
		{"y u fu", Protocol0, CallGetSlotList, func(w *RequestWriter) { w.Byte(1); w.UlongBufferSize(7) }, "01 00000007"},
		{"ay empty, fy non-NULL empty", Protocol1, CallSign, func(w *RequestWriter) { w.Ulong(0x11); w.ByteArray(nil); w.BufferSize(NonNullEmptyBuffer) },
			"0000000000000011 01 00000000 ffffffff"},
		{"ay NULL 0.24", Protocol0, CallLogin, func(w *RequestWriter) { w.Ulong(1); w.Ulong(1); w.NullByteArray() }, "0000000000000001 0000000000000001 00 00000000"},
		{"ay NULL 0.25", Protocol2, CallLogin, func(w *RequestWriter) { w.Ulong(1); w.Ulong(1); w.NullByteArray() }, "0000000000000001 0000000000000001 01 ffffffff"},
		{"z", Protocol0, CallInitToken, func(w *RequestWriter) { w.Ulong(1); w.ByteArray([]byte("so")); w.Zstring("lab") },
			"0000000000000001 01 00000002 736f 00000003 6c6162"},
		{"z NULL", Protocol0, CallInitToken, func(w *RequestWriter) { w.Ulong(1); w.ByteArray([]byte("so")); w.NullZstring() },
			"0000000000000001 01 00000002 736f ffffffff"},
		{"s", Protocol0, CallInitToken2, func(w *RequestWriter) { w.Ulong(1); w.ByteArray(nil); w.String("lab", 8) },
			"0000000000000001 01 00000000 00000008 6c61622020202020"},
		{"fA", Protocol0, CallGetAttributeValue, func(w *RequestWriter) {
			w.Ulong(1)
			w.Ulong(2)
			w.AttributeRequests([]AttributeRequest{{0x40000600, 0}, {0x11, 300}})
		},
			"0000000000000001 0000000000000002 00000002 40000600 00000000 00000011 0000012c"},
		{"aA every class", Protocol0, CallCreateObject, func(w *RequestWriter) {
			w.Ulong(1)
			w.Attributes([]Attribute{
				BoolAttribute(0x1, true),
				UlongAttribute(0x0, 3),
				{Type: 0x110, Value: []byte("20260131")},
				{Type: 0x111, Value: nil},
				{Type: 0x40000600, Value: []byte{0x41, 0x10, 0, 0, 0, 0, 0, 0, 0x40, 0x10, 0, 0, 0, 0, 0, 0}},
				BytesAttribute(0x3, []byte("key")),
				BytesAttribute(0x102, []byte{}),
				BytesAttribute(0x11, nil),
				UlongAttribute(0xce536358, 0xce53435a), // NSS trust: unlisted, raw LE
				BoolAttribute(0x172, false),            // CKA_DESTROYABLE: unlisted, raw
			})
		}, "0000000000000001 0000000a" +
			"00000001 01 00000001 01" +
			"00000000 01 00000008 0000000000000003" +
			"00000110 01 00000008 00000008 3230323630313331" +
			"00000111 01 00000000 ffffffff" +
			"40000600 01 00000010 00000002 0000000000001041 0000000000001040" +
			"00000003 01 00000003 00000003 6b6579" +
			"00000102 01 00000000 00000000" +
			"00000011 01 00000000 ffffffff" +
			"ce536358 01 00000008 00000008 5a4353ce00000000" +
			"00000172 01 00000001 00000001 00"},
		{"aA IBM CK_BBOOL, 0.24 table", Protocol0, CallCreateObject, func(w *RequestWriter) {
			w.Ulong(1)
			w.Attributes([]Attribute{BoolAttribute(0x80010001, true)})
		}, "0000000000000001 00000001 80010001 01 00000001 00000001 01"},
		{"aA IBM CK_BBOOL, 0.25 table", Protocol1, CallCreateObject, func(w *RequestWriter) {
			w.Ulong(1)
			w.Attributes([]Attribute{BoolAttribute(0x80010001, true)})
		}, "0000000000000001 00000001 80010001 01 00000001 01"},
		{"aA IBM CK_ULONG added in 0.25.6", Protocol2, CallCreateObject, func(w *RequestWriter) {
			w.Ulong(1)
			w.Attributes([]Attribute{UlongAttribute(0x800d0009, 2)})
		}, "0000000000000001 00000001 800d0009 01 00000008 0000000000000002"},
		{"aA p11-kit vendor type with the array bit", Protocol0, CallCreateObject, func(w *RequestWriter) {
			w.Ulong(1)
			w.Attributes([]Attribute{BytesAttribute(0xd8444764, []byte{1})})
		}, "0000000000000001 00000001 d8444764 01 00000001 00000001 01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := buildRequest(t, tc.call, tc.proto, tc.fill)
			sig, _ := tc.call.RequestSignature()
			want := mustHex(tc.call.hexID() + asciiLen(sig) + tc.hex)
			if !bytes.Equal(body, want) {
				t.Fatalf("encoded\n% x\nwant\n% x", body, want)
			}
			r, err := ParseRequest(body, tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := walkRequest(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, body) {
				t.Fatalf("round trip\n% x\n% x", out, body)
			}
		})
	}
}

// hexID returns the call id as hex.
func (c Call) hexID() string { return fmt.Sprintf("%08x", uint32(c)) }

// asciiLen returns the hex of a signature string as a raw byte array.
func asciiLen(s string) string { return fmt.Sprintf("%08x", len(s)) + asciiHex(s) }

func TestMechanismLayouts(t *testing.T) {
	pss := PSSParams{HashAlg: 0x250, MGF: 2, SaltLen: 0x20}
	pssHex := "0000000000000250 0000000000000002 0000000000000020"
	ecdh := ECDH1DeriveParams{KDF: 1, SharedData: nil, PublicData: []byte{4, 1, 2}}
	ecdhHex := "0000000000000001 ffffffff 00000003 040102"
	tests := []struct {
		name  string
		proto Protocol
		m     Mechanism
		hex   string
	}{
		{"ECDSA 0.24", Protocol0, Mechanism{Type: 0x1041}, "00001041 ffffffff"},
		{"ECDSA 0.25.0", Protocol1, Mechanism{Type: 0x1041}, "00001041 ffffffff"},
		{"ECDSA 0.25.6", Protocol2, Mechanism{Type: 0x1041}, "00001041"},
		{"RSA_PKCS_KEY_PAIR_GEN 0.25.0", Protocol1, Mechanism{Type: 0}, "00000000 ffffffff"},
		{"RSA_PKCS_KEY_PAIR_GEN 0.25.6", Protocol2, Mechanism{Type: 0}, "00000000"},
		{"PSS 0.24 (captured)", Protocol0, Mechanism{Type: 0x0d, Param: pss}, "0000000d" + pssHex},
		{"PSS 0.25.6", Protocol2, Mechanism{Type: 0x0d, Param: pss}, "0000000d 01" + pssHex},
		{"PSS NULL parameter 0.25.6", Protocol2, Mechanism{Type: 0x0d}, "0000000d 00"},
		{"SHA256_RSA_PKCS_PSS 0.25.0", Protocol1, Mechanism{Type: 0x43, Param: pss}, "00000043" + pssHex},
		{"SHA256_RSA_PKCS_PSS 0.24 (raw)", Protocol0, Mechanism{Type: 0x43, Param: RawParam{1, 2}}, "00000043 00000002 0102"},
		{"OAEP 0.24", Protocol0, Mechanism{Type: 0x09, Param: OAEPParams{HashAlg: 0x250, MGF: 2, Source: 1}},
			"00000009 0000000000000250 0000000000000002 0000000000000001 ffffffff"},
		{"OAEP label 0.25.6", Protocol2, Mechanism{Type: 0x09, Param: OAEPParams{HashAlg: 0x220, MGF: 1, Source: 1, SourceData: []byte("ab")}},
			"00000009 01 0000000000000220 0000000000000001 0000000000000001 00000002 6162"},
		{"ECDH1_DERIVE 0.25.0", Protocol1, Mechanism{Type: 0x1050, Param: ecdh}, "00001050" + ecdhHex},
		{"ECDH1_DERIVE 0.25.6", Protocol2, Mechanism{Type: 0x1050, Param: ecdh}, "00001050 01" + ecdhHex},
		{"ECDH1_DERIVE 0.24 (raw)", Protocol0, Mechanism{Type: 0x1050, Param: RawParam{}}, "00001050 00000000"},
		{"AES_GCM without parameter 0.25.6", Protocol2, Mechanism{Type: 0x1087}, "00001087 00"},
		{"NULL mechanism 0.25.3", Protocol1, Mechanism{Type: NullMechanism}, "ffffffff"},
		{"NULL mechanism 0.25.6", Protocol2, Mechanism{Type: NullMechanism}, "ffffffff"},
		{"type 0xffffffff from 0.24", Protocol0, Mechanism{Type: NullMechanism}, "ffffffff ffffffff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := buildRequest(t, CallDigestInit, tc.proto, func(w *RequestWriter) { w.Ulong(1); w.Mechanism(tc.m) })
			want := mustHex("00000025 00000002 754d 0000000000000001" + tc.hex)
			if !bytes.Equal(body, want) {
				t.Fatalf("encoded\n% x\nwant\n% x", body, want)
			}
			r, err := ParseRequest(body, tc.proto)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Ulong(); err != nil {
				t.Fatal(err)
			}
			m, err := r.Mechanism()
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Done(); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tc.m) {
				t.Fatalf("decoded %#v, want %#v", m, tc.m)
			}
		})
	}

	// Encoder refusals.
	for _, tc := range []struct {
		name  string
		proto Protocol
		m     Mechanism
		is    error
	}{
		{"PSS without parameter 0.24", Protocol0, Mechanism{Type: 0x0d}, ErrInvalidArgument},
		{"PSS with OAEP parameter", Protocol1, Mechanism{Type: 0x0d, Param: OAEPParams{}}, ErrInvalidArgument},
		{"AES_GCM parameter", Protocol2, Mechanism{Type: 0x1087, Param: RawParam{1}}, ErrUnsupportedMechanism},
		{"AES_CBC parameter 0.25.0", Protocol1, Mechanism{Type: 0x1082, Param: RawParam{1}}, ErrUnsupportedMechanism},
		{"ECDSA with a parameter 0.25.6", Protocol2, Mechanism{Type: 0x1041, Param: RawParam{1}}, ErrInvalidArgument},
		{"NULL mechanism with a parameter", Protocol2, Mechanism{Type: NullMechanism, Param: RawParam{}}, ErrInvalidArgument},
	} {
		w := NewRequest(CallDigestInit, tc.proto)
		w.Ulong(1)
		w.Mechanism(tc.m)
		if _, err := w.Bytes(); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}
}

// TestOutputBufferEncodings pins the §2.5 answers to output buffers and length queries.
func TestOutputBufferEncodings(t *testing.T) {
	tests := []struct {
		name  string
		call  Call
		build func(r *Response)
		hex   string
	}{
		{"fy = 0: required length", CallSign, func(r *Response) { r.ByteArrayLength(0x100) }, "00 00000100"},
		{"fy large enough: data", CallSign, func(r *Response) { r.ByteArray([]byte{1, 2}) }, "01 00000002 0102"},
		{"GenerateRandom(0): empty array", CallGenerateRandom, func(r *Response) { r.ByteArray(nil) }, "01 00000000"},
		{"fu = 0: required count", CallFindObjects, func(r *Response) { r.UlongArrayLength(3) }, "00 00000003"},
		{"fu large enough: handles", CallFindObjects, func(r *Response) { r.UlongArray([]uint64{1, 2}) }, "01 00000002 0000000000000001 0000000000000002"},
		{"no objects", CallFindObjects, func(r *Response) { r.UlongArray(nil) }, "01 00000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewResponse(tc.call, Protocol0)
			tc.build(r)
			got, err := r.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			sig, _ := tc.call.ResponseSignature()
			want := mustHex(tc.call.hexID() + asciiLen(sig) + tc.hex)
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n% x\nwant\n% x", got, want)
			}
		})
	}
}

// TestAttributeResults pins every kind of C_GetAttributeValue answer and its decoding by the
// client, with the buffers the client passed.
func TestAttributeResults(t *testing.T) {
	tests := []struct {
		name string
		req  AttributeRequest
		res  AttributeResult
		hex  string
		back AttributeResult // what the client decoder returns; zero = res
	}{
		{"CK_ULONG value", AttributeRequest{0x0, 8}, AttributeResult{Type: 0x0, Value: []byte{3, 0, 0, 0, 0, 0, 0, 0}},
			"00000000 01 00000008 0000000000000003", AttributeResult{}},
		{"CK_ULONG size only", AttributeRequest{0x100, 0}, AttributeResult{Type: 0x100, Kind: ResultSizeOnly, Size: 8},
			"00000100 01 00000008 0000000000000000", AttributeResult{}},
		{"CK_BBOOL value", AttributeRequest{0x202, 1}, AttributeResult{Type: 0x202, Value: []byte{1}},
			"00000202 01 00000001 01", AttributeResult{}},
		{"CK_BBOOL size only", AttributeRequest{0x202, 0}, AttributeResult{Type: 0x202, Kind: ResultSizeOnly, Size: 1},
			"00000202 01 00000001 00", AttributeResult{}},
		{"byte array size only (captured MODULUS)", AttributeRequest{0x120, 0}, AttributeResult{Type: 0x120, Kind: ResultSizeOnly, Size: 256},
			"00000120 01 00000100 ffffffff", AttributeResult{}},
		{"byte array value", AttributeRequest{0x102, 4}, AttributeResult{Type: 0x102, Value: []byte{1}},
			"00000102 01 00000001 00000001 01", AttributeResult{}},
		{"byte array, buffer too small: size only", AttributeRequest{0x120, 16}, AttributeResult{Type: 0x120, Kind: ResultSizeOnly, Size: 256},
			"00000120 01 00000100 ffffffff", AttributeResult{}},
		{"ALLOWED_MECHANISMS size only (P5)", AttributeRequest{0x40000600, 0}, AttributeResult{Type: 0x40000600, Kind: ResultSizeOnly, Size: 16},
			"40000600 01 00000010 00000000", AttributeResult{}},
		{"ALLOWED_MECHANISMS value", AttributeRequest{0x40000600, 16},
			AttributeResult{Type: 0x40000600, Value: []byte{0x41, 0x10, 0, 0, 0, 0, 0, 0, 0x40, 0x10, 0, 0, 0, 0, 0, 0}},
			"40000600 01 00000010 00000002 0000000000001041 0000000000001040", AttributeResult{}},
		{"date size only", AttributeRequest{0x110, 0}, AttributeResult{Type: 0x110, Kind: ResultSizeOnly, Size: 8},
			"00000110 01 00000008 ffffffff", AttributeResult{}},
		{"empty date", AttributeRequest{0x111, 8}, AttributeResult{Type: 0x111, Value: nil},
			"00000111 01 00000000 ffffffff", AttributeResult{}},
		{"unavailable", AttributeRequest{0x123, 0}, AttributeResult{Type: 0x123, Kind: ResultUnavailable},
			"00000123 00", AttributeResult{}},
		{"NSS trust, unlisted CK_ULONG", AttributeRequest{0xce536358, 8}, AttributeResult{Type: 0xce536358, Value: []byte{0x5a, 0x43, 0x53, 0xce, 0, 0, 0, 0}},
			"ce536358 01 00000008 00000008 5a4353ce00000000", AttributeResult{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := NewResponse(CallGetAttributeValue, Protocol0)
			w.Attributes([]AttributeResult{tc.res})
			w.Ulong(0)
			got, err := w.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			want := mustHex("00000018 00000003 614175 00000001" + tc.hex + "0000000000000000")
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n% x\nwant\n% x", got, want)
			}
			r, err := ParseResponse(got, CallGetAttributeValue, Protocol0)
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Attributes([]AttributeRequest{tc.req})
			if err != nil {
				t.Fatal(err)
			}
			back := tc.back
			if reflect.DeepEqual(back, AttributeResult{}) {
				back = tc.res
			}
			if !reflect.DeepEqual(res[0], back) {
				t.Fatalf("decoded %+v, want %+v", res[0], back)
			}
		})
	}

	// Encoder refusals.
	for _, tc := range []struct {
		name string
		res  AttributeResult
		is   error
	}{
		{"CK_BBOOL of 2 bytes", AttributeResult{Type: 0x1, Value: []byte{1, 0}}, ErrInvalidAttribute},
		{"CK_ULONG of 4 bytes", AttributeResult{Type: 0x0, Value: []byte{1, 0, 0, 0}}, ErrInvalidAttribute},
		{"CK_ULONG size 4", AttributeResult{Type: 0x0, Kind: ResultSizeOnly, Size: 4}, ErrInvalidAttribute},
		{"CK_BBOOL size 0", AttributeResult{Type: 0x1, Kind: ResultSizeOnly, Size: 0}, ErrInvalidAttribute},
		{"mechanism array of 12 bytes", AttributeResult{Type: 0x40000600, Value: make([]byte, 12)}, ErrInvalidAttribute},
		{"date of 3 bytes", AttributeResult{Type: 0x110, Value: []byte("202")}, ErrInvalidAttribute},
		{"WRAP_TEMPLATE unavailable", AttributeResult{Type: 0x40000211, Kind: ResultUnavailable}, ErrNestedTemplate},
		{"bad kind", AttributeResult{Type: 0x3, Kind: 9}, ErrInvalidArgument},
	} {
		w := NewResponse(CallGetAttributeValue, Protocol0)
		w.Attributes([]AttributeResult{tc.res})
		w.Ulong(0)
		if _, err := w.Bytes(); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}

	// Client decoder refusals.
	for _, tc := range []struct {
		name string
		reqs []AttributeRequest
		hex  string
		is   error
	}{
		{"count differs", []AttributeRequest{{0x3, 0}, {0x11, 0}}, "00000001 00000003 00", ErrMalformed},
		{"order differs", []AttributeRequest{{0x11, 0}}, "00000001 00000003 00", ErrMalformed},
		{"nested template", []AttributeRequest{{0x40000211, 0}}, "00000001 40000211 00", ErrNestedTemplate},
		{"value longer than its size", []AttributeRequest{{0x3, 0}}, "00000001 00000003 01 00000001 00000002 4142", ErrMalformed},
	} {
		r, err := ParseResponse(mustHex("00000018 00000003 614175"+tc.hex+"0000000000000000"), CallGetAttributeValue, Protocol0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Attributes(tc.reqs); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}
}

func TestInfoReplies(t *testing.T) {
	w := NewResponse(CallGetInfo, Protocol0)
	w.Version(2, 40)
	w.String("tokenlab", 32)
	w.Ulong(0)
	w.String("virtual PIV token — a very long description", 32)
	w.Version(0, 1)
	body, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseResponse(body, CallGetInfo, Protocol0)
	if err != nil {
		t.Fatal(err)
	}
	if major, minor, err := r.Version(); major != 2 || minor != 40 || err != nil {
		t.Fatalf("version %d.%d %v", major, minor, err)
	}
	if s, err := r.String(); s != "tokenlab"+strings.Repeat(" ", 24) || err != nil {
		t.Fatalf("manufacturer %q %v", s, err)
	}
	if _, err := r.Ulong(); err != nil {
		t.Fatal(err)
	}
	// The em dash (3 bytes at offsets 18–20) fits; the cut falls mid-word, on a byte boundary.
	if s, err := r.String(); s != "virtual PIV token — a very lon" || len(s) != 32 || err != nil {
		t.Fatalf("description %q (%d bytes) %v", s, len(s), err)
	}
	if _, _, err := r.Version(); err != nil {
		t.Fatal(err)
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
}

func TestPadString(t *testing.T) {
	tests := []struct {
		in   string
		size int
		want string
	}{
		{"", 4, "    "},
		{"ab", 4, "ab  "},
		{"abcd", 4, "abcd"},
		{"abcdef", 4, "abcd"},
		{"abcé", 4, "abc "},                   // é is 2 bytes: cut before it, pad
		{"ab€", 4, "ab  "},                    // € is 3 bytes
		{"a\xff\xfe\xfd\xfc", 3, "a\xff\xfe"}, // not UTF-8: bytes kept
	}
	for _, tc := range tests {
		if got := string(padString(tc.in, tc.size)); got != tc.want {
			t.Errorf("padString(%q, %d) = %q, want %q", tc.in, tc.size, got, tc.want)
		}
	}
}

func TestParseResponseErrors(t *testing.T) {
	tests := []struct {
		name string
		call Call
		hex  string
		is   error
	}{
		{"reply for another call", CallSign, "0000002a 00000000", ErrCallMismatch},
		{"wrong signature", CallSign, "0000002b 00000001 75 0000000000000000", ErrSignatureMismatch},
		{"ERROR with rv 0", CallSign, "00000000 00000001 75 0000000000000000", ErrMalformed},
		{"ERROR without rv", CallSign, "00000000 00000001 75", ErrMalformed},
		{"ERROR with another signature", CallSign, "00000000 00000000", ErrSignatureMismatch},
		{"unknown call", Call(99), "00000063 00000000", ErrUnknownCall},
	}
	for _, tc := range tests {
		if _, err := ParseResponse(mustHex(tc.hex), tc.call, Protocol0); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}
}

func TestParamUpdate(t *testing.T) {
	for _, tc := range []struct {
		m   Mechanism
		hex string
	}{
		{Mechanism{Type: 0x1050, Param: ECDH1DeriveParams{}}, "01"},
		{Mechanism{Type: 0x1050}, "00"},
		{Mechanism{Type: 0x1041}, ""}, // ECDSA takes no parameter
	} {
		w := NewResponse(CallDeriveKey2, Protocol2)
		w.Ulong(0)
		w.ParamUpdate(tc.m)
		w.Ulong(5)
		got, err := w.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		want := mustHex("00000059 00000003 755075 0000000000000000" + tc.hex + "0000000000000005")
		if !bytes.Equal(got, want) {
			t.Fatalf("%#x: % x", tc.m.Type, got)
		}
		r, err := ParseResponse(got, CallDeriveKey2, Protocol2)
		if err != nil {
			t.Fatal(err)
		}
		r.Ulong()
		present, err := r.ParamUpdate(tc.m.Type)
		if err != nil || present != (tc.m.Param != nil) {
			t.Fatalf("%#x: %v %v", tc.m.Type, present, err)
		}
	}
	w := NewResponse(CallDeriveKey2, Protocol2)
	w.Ulong(0)
	w.ParamUpdate(Mechanism{Type: ckmIBMKyber, Param: RawParam{}})
	if _, err := w.Bytes(); !errors.Is(err, ErrUnsupportedMechanism) {
		t.Errorf("Kyber: %v", err)
	}
}

func TestAttributeHelpers(t *testing.T) {
	a := UlongAttribute(0x0, 3)
	if v, ok := a.Ulong(); !ok || v != 3 || !bytes.Equal(a.Value, []byte{3, 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("UlongAttribute: %v %v % x", v, ok, a.Value)
	}
	if _, ok := a.Bool(); ok {
		t.Error("an 8-byte value is a bool")
	}
	b := BoolAttribute(0x1, true)
	if v, ok := b.Bool(); !ok || !v || !bytes.Equal(b.Value, []byte{1}) {
		t.Errorf("BoolAttribute: %v %v", v, ok)
	}
	if v, ok := BoolAttribute(0x1, false).Bool(); !ok || v {
		t.Errorf("BoolAttribute(false): %v %v", v, ok)
	}
	if _, ok := b.Ulong(); ok {
		t.Error("a 1-byte value is a ulong")
	}
	if c := BytesAttribute(0x3, []byte("x")); c.Type != 0x3 || string(c.Value) != "x" {
		t.Errorf("BytesAttribute: %+v", c)
	}
}

// TestCallMixRoundTrip runs the seeds of FuzzParseRequest through the oracle once.
func TestCallMixRoundTrip(t *testing.T) {
	for _, p := range []Protocol{Protocol0, Protocol1, Protocol2} {
		for _, body := range callMixRequests(t, p) {
			r, err := ParseRequest(body, p)
			if err != nil {
				t.Fatalf("protocol %d: %v", p, err)
			}
			out, _, err := walkRequest(r)
			if err != nil {
				t.Fatalf("protocol %d %s: %v", p, r.Call, err)
			}
			if !bytes.Equal(out, body) {
				t.Fatalf("protocol %d %s: round trip\n% x\n% x", p, r.Call, out, body)
			}
		}
	}
}
