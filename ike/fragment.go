package ike

// IKE fragmentation, RFC 7383: a protected message too large for the path is split into
// Encrypted Fragment (SKF) payloads, each protected on its own, and put back together by the
// receiver after each fragment was authenticated (§2.6).

// Bounds of reassembly: a peer cannot make us keep more than this.
const (
	maxFragments = 32
	// minFragmentSize is the smallest fragment size accepted in configuration: an IPv4 header
	// and UDP header below the 576 bytes every IPv4 host takes, with room for a payload.
	minFragmentSize = 256
	// DefaultFragmentSize fits a 1280-byte IPv6 minimum MTU with IP and UDP headers, as
	// strongSwan's fragment_size default.
	DefaultFragmentSize = 1280 - 40 - 8 - 4
)

// fragment splits plain into SKF messages of at most sa.fragSize bytes.
func (sa *ikeSA) fragment(h Header, first PayloadType, plain []byte) ([][]byte, error) {
	// Room for payload bytes per fragment: the size less header, SKF header, IV, ICV, the pad
	// length byte and, for CBC, up to a block of padding.
	overhead := headerLen + 8 + sa.out.bodyLen(0)
	if sa.out.aead == nil {
		overhead += 15
	}
	room := sa.fragSize - overhead
	if room < 16 {
		room = 16
	}
	total := (len(plain) + room - 1) / room
	if total > maxFragments {
		return nil, syntaxErr("message of %d bytes needs %d fragments (at most %d)", len(plain), total, maxFragments)
	}
	out := make([][]byte, 0, total)
	for i := 0; i < total; i++ {
		chunk := plain[i*room : min(len(plain), (i+1)*room)]
		next := PayloadNone
		if i == 0 {
			next = first
		}
		msg, err := sa.seal(h, PayloadSKF, next, uint16(i+1), uint16(total), chunk)
		if err != nil {
			return nil, err
		}
		out = append(out, msg)
	}
	return out, nil
}

// reassembly collects the authenticated fragments of one message at a time per direction.
type reassembly struct {
	id       uint32
	response bool
	total    uint16
	first    PayloadType
	parts    [][]byte // by fragment number - 1
	got      []bool
	have     int
	size     int
}

// add keeps one decrypted fragment, and returns the whole plaintext once every fragment is in.
// A fragment of another message than the one being collected starts over (one message at a
// time: the window is one); duplicates are ignored.
func (r *reassembly) add(id uint32, response bool, enc *encrypted, plain []byte) ([]byte, PayloadType, bool, error) {
	if enc.total > maxFragments {
		return nil, 0, false, syntaxErr("SKF: %d fragments (at most %d)", enc.total, maxFragments)
	}
	if r.parts == nil || r.id != id || r.response != response || r.total != enc.total {
		*r = reassembly{id: id, response: response, total: enc.total, parts: make([][]byte, enc.total), got: make([]bool, enc.total)}
	}
	i := int(enc.number) - 1
	if r.got[i] {
		return nil, 0, false, nil
	}
	if r.size+len(plain) > maxMessageLen {
		*r = reassembly{}
		return nil, 0, false, syntaxErr("SKF: reassembled message over %d bytes", maxMessageLen)
	}
	r.parts[i], r.got[i] = append([]byte(nil), plain...), true
	r.have++
	r.size += len(plain)
	if i == 0 {
		r.first = enc.next
	}
	if r.have < int(r.total) {
		return nil, 0, false, nil
	}
	whole := make([]byte, 0, r.size)
	for _, p := range r.parts {
		whole = append(whole, p...)
	}
	first := r.first
	*r = reassembly{}
	return whole, first, true, nil
}
