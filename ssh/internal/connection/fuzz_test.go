package connection

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// scriptPC feeds the Mux the packets of a script and counts what it writes. Its first read
// waits for the Mux's first write, the harness's own CHANNEL_OPEN, so that the script's
// confirmations find their channel.
type scriptPC struct {
	packets [][]byte
	opened  chan struct{}
	once    sync.Once

	mu     sync.Mutex
	writes int
}

// maxScriptWrites is far more than any script can ask for: more means a loop.
const maxScriptWrites = 10000

func (s *scriptPC) ReadPacket() ([]byte, error) {
	<-s.opened
	if len(s.packets) == 0 {
		return nil, io.EOF
	}
	p := s.packets[0]
	s.packets = s.packets[1:]
	return p, nil
}

func (s *scriptPC) WritePacket(p []byte) error {
	s.once.Do(func() { close(s.opened) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writes++; s.writes > maxScriptWrites {
		return errors.New("too many writes")
	}
	return nil
}

func (s *scriptPC) QueuePacket(p []byte) error { return s.WritePacket(p) }
func (s *scriptPC) Close() error               { return nil }

// splitScript cuts a fuzz input into packets, each after a 2-byte length.
func splitScript(in []byte) [][]byte {
	var out [][]byte
	for len(in) >= 2 {
		n := int(binary.BigEndian.Uint16(in))
		in = in[2:]
		if n > len(in) {
			n = len(in)
		}
		out = append(out, in[:n])
		in = in[n:]
	}
	return out
}

func joinScript(packets [][]byte) []byte {
	var out []byte
	for _, p := range packets {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

// FuzzMux: a Mux that has opened a channel of its own and accepts the peer's is fed any
// sequence of connection-layer messages (channel open, confirmation and failure, data, window
// adjust, EOF, close, channel and global requests and their replies). Oracles: no panic, the
// Mux and every goroutine using its channels end when the messages run out, and it writes a
// bounded number of packets.
func FuzzMux(f *testing.F) {
	f.Add(joinScript([][]byte{channelOpen(0, 1<<20, 32<<10)}))
	f.Fuzz(func(t *testing.T, in []byte) {
		pc := &scriptPC{packets: splitScript(in), opened: make(chan struct{})}
		m := New(pc)
		var wg sync.WaitGroup
		use := func(ch *Channel) {
			defer wg.Done()
			go func() {
				for r := range ch.Requests() {
					r.Reply(r.Type == "exec")
				}
			}()
			ch.Write([]byte("hello"))
			ch.Stderr().Write([]byte("oops"))
			ch.CloseWrite()
			io.Copy(io.Discard, ch)
			ch.Close()
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			ch, err := m.OpenChannel("session", nil)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				ch.SendRequest("exec", true, []byte("\x00\x00\x00\x04true"))
				use(ch)
			}()
		}()
		go func() {
			defer wg.Done()
			for nc := range m.Incoming() {
				ch, err := nc.Accept()
				if err != nil {
					continue
				}
				wg.Add(1)
				go use(ch)
			}
		}()
		m.Run()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("goroutines using the channels still run 5 s after the connection ended")
		}
		if pc.writes > maxScriptWrites {
			t.Fatalf("%d packets written for %d read", pc.writes, len(splitScript(in)))
		}
	})
}
