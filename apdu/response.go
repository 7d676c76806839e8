package apdu

import "errors"

// Response is a response APDU: data followed by a status word.
type Response struct {
	Data []byte
	SW   StatusWord
}

// ErrShortResponse is returned for a response without its two status bytes.
var ErrShortResponse = errors.New("apdu: response shorter than its 2-byte status word")

// ParseResponse splits a response APDU into data and status word. Data aliases b.
func ParseResponse(b []byte) (Response, error) {
	if len(b) < 2 {
		return Response{}, ErrShortResponse
	}
	n := len(b) - 2
	return Response{Data: b[:n:n], SW: StatusWord(b[n])<<8 | StatusWord(b[n+1])}, nil
}

// AppendBinary appends data and status word to dst.
func (r *Response) AppendBinary(dst []byte) ([]byte, error) {
	dst = append(dst, r.Data...)
	return append(dst, r.SW.SW1(), r.SW.SW2()), nil
}

// Err returns r.SW.Err().
func (r *Response) Err() error { return r.SW.Err() }
