package piv

import (
	"golang.org/x/crypto/cryptobyte"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
)

// Storage limits. A YubiKey holds objects of up to about 3 KB (YKPIV_OBJ_MAX_SIZE 3072) in
// roughly 50 KB; the total bound also keeps a hostile host from growing the state file.
const (
	maxObjectSize  = 3072
	maxObjectTotal = 64 << 10
)

// readTagList reads the tag list 5C of GET DATA and PUT DATA: a tag of one to three bytes.
func readTagList(s *cryptobyte.String) (tlv.Tag, bool) {
	var t tlv.Tag
	var v cryptobyte.String
	if !tlv.Read(s, &t, &v) || t != tagTagList || len(v) == 0 || len(v) > 3 {
		return 0, false
	}
	var tag tlv.Tag
	for _, b := range v {
		tag = tag<<8 | tlv.Tag(b)
	}
	return tag, true
}

// getData implements GET DATA (SP 800-73-4 Pt 2 §3.1.2): P1 P2 3F FF, data 5C { tag }. Objects
// come back wrapped in 53, the discovery object as its own 7E.
func (a *Applet) getData(cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return rsp, apdu.SWIncorrectP1P2
	}
	s := cryptobyte.String(cmd.Data)
	tag, ok := readTagList(&s)
	if !ok || !s.Empty() {
		return rsp, apdu.SWIncorrectData
	}
	if pinProtected(tag) && !a.pinVerified {
		return rsp, apdu.SWSecurityStatusNotSatisfied
	}
	v, ok := a.p.objects[tag]
	if !ok {
		return rsp, apdu.SWNotFound
	}
	if tag == tagDiscovery {
		return tlv.Append(rsp, tagDiscovery, v), apdu.SWSuccess
	}
	return tlv.Append(rsp, tagDataObjectWrapper, v), apdu.SWSuccess
}

// putData implements PUT DATA (SP 800-73-4 Pt 2 §3.3.1): 5C { tag } 53 { value }, or the
// discovery object 7E { value } alone. An empty 53 deletes the object. It needs the management key.
func (a *Applet) putData(cmd *apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return apdu.SWIncorrectP1P2
	}
	if !a.mgmAuthed {
		return apdu.SWSecurityStatusNotSatisfied
	}
	var tag tlv.Tag
	var value []byte
	if v, ok := tlv.Unwrap(cmd.Data, tagDiscovery); ok {
		tag, value = tagDiscovery, v
	} else {
		s := cryptobyte.String(cmd.Data)
		t, ok := readTagList(&s)
		if !ok || t == tagDiscovery {
			return apdu.SWIncorrectData
		}
		v, ok := tlv.Unwrap(s, tagDataObjectWrapper)
		if !ok {
			return apdu.SWIncorrectData
		}
		tag, value = t, v
	}
	if len(value) > maxObjectSize {
		return apdu.SWNotEnoughMemory
	}
	if len(value) == 0 {
		value = nil
	} else {
		value = append([]byte(nil), value...)
		if a.p.objectBytes-len(a.p.objects[tag])+len(value) > maxObjectTotal {
			return apdu.SWNotEnoughMemory
		}
	}
	return a.update(func(p *persistent) { p.setObject(tag, value) })
}

// defaultObjects returns what a fresh card holds: a discovery object, a card capability
// container, and a CHUID with a random GUID (OpenSC derives the token serial from it, so two
// virtual cards must not share one).
func defaultObjects(serial uint32) map[tlv.Tag][]byte {
	objs := map[tlv.Tag][]byte{}

	// Discovery: the PIV AID and the PIN usage policy "PIV Card Application PIN only" (5F2F 40 00).
	var disc []byte
	disc = tlv.Append(disc, tagApplicationIdentifier, AID)
	disc = tlv.Append(disc, tagPINUsagePolicy, []byte{0x40, 0x00})
	objs[tagDiscovery] = disc

	// CCC (SP 800-73-4 Pt 1 Table 8): card identifier = GSC-RID, manufacturer FF, card type 02
	// (Java card), 14 random bytes; version 21; the other fields empty or fixed.
	var ccc []byte
	ccc = tlv.Append(ccc, 0xF0, append([]byte{0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02}, random(14)...))
	ccc = tlv.Append(ccc, 0xF1, []byte{0x21})
	ccc = tlv.Append(ccc, 0xF2, []byte{0x21})
	ccc = tlv.Append(ccc, 0xF3, nil)
	ccc = tlv.Append(ccc, 0xF4, []byte{0x00})
	ccc = tlv.Append(ccc, 0xF5, []byte{0x10})
	for _, t := range []tlv.Tag{0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE} {
		ccc = tlv.Append(ccc, t, nil)
	}
	objs[tagCardCapability] = ccc

	// CHUID (SP 800-73-4 Pt 1 Table 9): FASC-N with agency code 9999 (so hosts use the GUID),
	// GUID, expiration date, empty issuer signature, LRC.
	var chuid []byte
	chuid = tlv.Append(chuid, 0x30, fascn(serial))
	chuid = tlv.Append(chuid, 0x34, random(16))
	chuid = tlv.Append(chuid, 0x35, []byte("20991231"))
	chuid = tlv.Append(chuid, 0x3E, nil)
	chuid = tlv.Append(chuid, 0xFE, nil)
	objs[tagCHUID] = chuid
	return objs
}

// fascn encodes a FASC-N (TIG SCEPACS v2.3 §6) for a non-federal issuer: agency 9999, system
// 9999, the card serial as credential number. Each character is four BCD bits, least significant
// first, plus an odd-parity bit; 40 characters make 200 bits (25 bytes).
func fascn(serial uint32) []byte {
	const (
		ss = 0x0B // start sentinel
		fs = 0x0D // field separator
		es = 0x0F // end sentinel
	)
	digits := func(n uint64, width int) []byte {
		d := make([]byte, width)
		for i := width - 1; i >= 0; i-- {
			d[i] = byte(n % 10)
			n /= 10
		}
		return d
	}
	var chars []byte
	chars = append(chars, ss)
	chars = append(chars, digits(9999, 4)...) // agency code
	chars = append(chars, fs)
	chars = append(chars, digits(9999, 4)...) // system code
	chars = append(chars, fs)
	chars = append(chars, digits(uint64(serial)%1000000, 6)...) // credential number
	chars = append(chars, fs, 1, fs, 1, fs)                     // credential series, individual credential issue
	chars = append(chars, digits(uint64(serial), 10)...)        // person identifier
	chars = append(chars, 1)                                    // organizational category: federal government agency
	chars = append(chars, digits(9999, 4)...)                   // organizational identifier
	chars = append(chars, 1)                                    // person/organization association: employee
	chars = append(chars, es)
	var lrc byte
	for _, c := range chars {
		lrc ^= c
	}
	chars = append(chars, lrc)

	out := make([]byte, 25)
	bit := 0
	for _, c := range chars {
		v := c & 0x0F
		p := byte(1) // odd parity over the five bits
		for i := 0; i < 4; i++ {
			p ^= (v >> i) & 1
		}
		five := []byte{v & 1, v >> 1 & 1, v >> 2 & 1, v >> 3 & 1, p}
		for _, b := range five {
			if b != 0 {
				out[bit/8] |= 0x80 >> (bit % 8)
			}
			bit++
		}
	}
	return out
}
