package p11rpc

import "testing"

func TestCallTable(t *testing.T) {
	tests := []struct {
		call     Call
		name     string
		req, rsp string
	}{
		{CallInitialize, "C_Initialize", "ayyay", ""},
		{CallGetInfo, "C_GetInfo", "", "vsusv"},
		{CallGetTokenInfo, "C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs"},
		{CallGetAttributeValue, "C_GetAttributeValue", "uufA", "aAu"},
		{CallSign, "C_Sign", "uayfy", "ay"},
		{CallGenerateKeyPair, "C_GenerateKeyPair", "uMaAaA", "uu"},
		{CallWaitForSlotEvent, "C_WaitForSlotEvent", "u", "u"},
		{CallLoginUser, "C_LoginUser", "uuayay", ""},
		{CallSignMessageNext, "C_SignMessageNext", "uayayyfy", "ay"},
		{CallInitToken2, "C_InitToken2", "uays", ""},
		{CallDeriveKey2, "C_DeriveKey2", "uMuaA", "uPu"},
	}
	for _, tc := range tests {
		if got := tc.call.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", uint32(tc.call), got, tc.name)
		}
		if req, ok := tc.call.RequestSignature(); !ok || req != tc.req {
			t.Errorf("%s request signature %q, %v", tc.name, req, ok)
		}
		if rsp, ok := tc.call.ResponseSignature(); !ok || rsp != tc.rsp {
			t.Errorf("%s response signature %q, %v", tc.name, rsp, ok)
		}
	}

	if _, ok := CallError.RequestSignature(); ok {
		t.Error("ERROR has a request signature")
	}
	if rsp, ok := CallError.ResponseSignature(); !ok || rsp != "u" || CallError.String() != "ERROR" {
		t.Errorf("ERROR: %q %v %q", rsp, ok, CallError)
	}
	if Call(90).Known() || Call(90).String() != "call(90)" {
		t.Errorf("call 90: %v %q", Call(90).Known(), Call(90))
	}
	if _, ok := Call(90).ResponseSignature(); ok {
		t.Error("call 90 has a response signature")
	}
}

// TestCallTableLetters checks that every signature splits into known letters, and that
// LookupCall inverts String.
func TestCallTableLetters(t *testing.T) {
	for c := Call(0); c < NumCalls; c++ {
		if !c.Known() {
			t.Fatalf("%d not known", c)
		}
		if got, ok := LookupCall(c.String()); !ok || got != c {
			t.Errorf("LookupCall(%q) = %d, %v", c, got, ok)
		}
		req, _ := c.RequestSignature()
		rsp, _ := c.ResponseSignature()
		for _, sig := range []string{req, rsp} {
			if _, err := splitSignature(sig); err != nil {
				t.Errorf("%s: %v", c, err)
			}
		}
	}
	if _, ok := LookupCall("C_Nothing"); ok {
		t.Error("LookupCall found C_Nothing")
	}
}
