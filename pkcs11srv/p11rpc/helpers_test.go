package p11rpc

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// mustHex decodes the hex test vectors of this package, which are written with spaces between
// fields as in the reference; a malformed constant is a bug in the test.
func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic("bad test vector " + s + ": " + err.Error())
	}
	return b
}

// asciiHex returns the hex of an ASCII string, to write signatures and labels readably.
func asciiHex(s string) string { return hex.EncodeToString([]byte(s)) }

// rpcHandshake is the string C_Initialize carries (P11_RPC_HANDSHAKE in p11-kit/rpc-message.h).
const rpcHandshake = "PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"

// capture is a message body observed on the wire between p11-kit-client.so 0.24.1 and
// `p11-kit server` (p11kit-rpc.md §1.2, §2.3 and the appendix).
type capture struct {
	name  string
	reply bool // a server's reply to call; else a client's request
	call  Call
	hex   string
}

var captures = []capture{
	{"C_Initialize request", false, CallInitialize,
		"00000001 00000005" + asciiHex("ayyay") + "01 00000029" + asciiHex(rpcHandshake) + "00 01 00000001 00"},
	{"C_Initialize reply", true, CallInitialize, "00000001 00000000"},
	{"C_Finalize request", false, CallFinalize, "00000002 00000000"},
	{"C_Finalize reply", true, CallFinalize, "00000002 00000000"},
	{"C_GetSlotList size query", false, CallGetSlotList, "00000004 00000003 796675 00 00000000"},
	{"C_GetSlotList size reply", true, CallGetSlotList, "00000004 00000002 6175 00 00000001"},
	{"C_GetSlotList request", false, CallGetSlotList, "00000004 00000003 796675 00 00000001"},
	{"C_GetSlotList reply", true, CallGetSlotList, "00000004 00000002 6175 01 00000001 0000000000000011"},
	{"C_SignInit RSA-PKCS-PSS", false, CallSignInit,
		"0000002a 00000003 754d75 0000000000000011 0000000d 0000000000000250 0000000000000002 0000000000000020 0000000000000003"},
	{"C_Sign size-query reply", true, CallSign, "0000002b 00000002 6179 00 00000100"},
	{"C_GetAttributeValue size-only request", false, CallGetAttributeValue,
		"00000018 00000004 75756641 0000000000000011 0000000000000003 00000003 00000102 00000000 00000120 00000000 00000122 00000000"},
	{"C_GetAttributeValue size-only reply", true, CallGetAttributeValue,
		"00000018 00000003 614175 00000003 00000102 01 00000001 ffffffff 00000120 01 00000100 ffffffff 00000122 01 00000003 ffffffff 0000000000000000"},
	{"ERROR CKR_ARGUMENTS_BAD", true, CallDecryptInit, "00000000 00000001 75 0000000000000007"},
	{"C_WaitForSlotEvent(CKF_DONT_BLOCK)", false, CallWaitForSlotEvent, "00000041 00000001 75 0000000000000001"},
	// §2.3: the aA was captured; the call id, signature and session handle around it are ours.
	{"C_FindObjectsInit CLASS=PRIVATE_KEY ID=01", false, CallFindObjectsInit,
		"0000001a 00000003 756141 0000000000000011 00000002 00000000 01 00000008 0000000000000003 00000102 01 00000001 00000001 01"},
}

// splitSignature splits a signature string into its letters (§2.1).
func splitSignature(sig string) ([]string, error) {
	var out []string
	for i := 0; i < len(sig); {
		switch sig[i] {
		case 'y', 'u', 'v', 's', 'z', 'M', 'P':
			out = append(out, sig[i:i+1])
			i++
		case 'a', 'f':
			if i+1 == len(sig) || !strings.ContainsRune("yuA", rune(sig[i+1])) {
				return nil, fmt.Errorf("signature %q: bad letter at %d", sig, i)
			}
			out = append(out, sig[i:i+2])
			i += 2
		default:
			return nil, fmt.Errorf("signature %q: bad letter at %d", sig, i)
		}
	}
	return out, nil
}
