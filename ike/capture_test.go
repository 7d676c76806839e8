package ike

import (
	"context"
	"crypto/elliptic"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the tokenlab-* captures in testdata/fuzz/captures")

// captures are the messages the recorders of one test collected; the recorders of both
// sides write to it from their sockets' goroutines.
type captures struct {
	mu  sync.Mutex
	got map[string][]byte
}

// recorder collects what Config.Record is given, named by side, exchange and direction.
type recorder struct {
	all  *captures
	side string
	n    int
}

func (r *recorder) record(b []byte) {
	r.all.mu.Lock()
	defer r.all.mu.Unlock()
	h, err := ParseHeader(b)
	if err != nil {
		return
	}
	kind := "req"
	if h.IsResponse() {
		kind = "resp"
	}
	r.n++
	r.all.got[fmt.Sprintf("tokenlab-%s-%02d-%s-%s.ike", r.side, r.n, h.Exchange, kind)] = append([]byte(nil), b...)
}

// TestCaptures runs in-process IKE SAs through every exchange (certificates with
// fragmentation, EAP-MSCHAPv2 with a configuration payload, Child SA and IKE SA rekeys,
// liveness, deletes) and records what each side received. Every recorded message and every
// stored capture (charon's included) survives decode→encode→decode. With -update the
// tokenlab-* captures are rewritten.
func TestCaptures(t *testing.T) {
	all := &captures{got: map[string][]byte{}}
	got := all.got // read once every session is closed
	run := func(name string, init, resp *Config, exercise func(*Session)) {
		ri := &recorder{all: all, side: name + "-i"}
		rr := &recorder{all: all, side: name + "-r"}
		init.Record, resp.Record = ri.record, rr.record
		r := listen(t, resp)
		s := dial(t, init, r)
		if exercise != nil {
			exercise(s)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("%s: close: %v", name, err)
		}
		r.Close()
	}
	ctx := context.Background()

	init, resp := certPair(t, elliptic.P384(), elliptic.P256())
	init.FragmentSize, resp.FragmentSize = 400, 400
	run("cert", init, resp, func(s *Session) {
		if err := s.Ping(ctx); err != nil {
			t.Error(err)
		}
		if c := s.Children(); len(c) == 1 {
			if _, err := s.RekeyChild(ctx, c[0]); err != nil {
				t.Error(err)
			}
		}
		if err := s.RekeyIKE(ctx); err != nil {
			t.Error(err)
		}
	})

	init, resp = certPair(t, elliptic.P256(), elliptic.P256())
	id, _ := ParseIdentity("alice")
	gw, _ := ParseIdentity("gw.test")
	resp.EAPServer = &EAPServer{Users: map[string]EAPUser{"alice": {Password: []byte("alice-password")}}}
	resp.Pool, _ = ParsePool("10.40.40.2-10.40.40.20")
	resp.DNS = []netip.Addr{netip.MustParseAddr("10.40.40.1")}
	eap := &Config{LocalID: id, RemoteID: &gw, CAs: init.CAs, RequestConfig: true, Log: init.Log,
		EAP: &EAPClient{Identity: "alice", Password: []byte("alice-password")}}
	run("eap", eap, resp, nil)

	if len(got) < 20 {
		t.Errorf("only %d messages recorded", len(got))
	}
	for name, b := range got {
		t.Run(name, func(t *testing.T) { checkRoundTrip(t, b) })
	}
	if *update {
		old, _ := filepath.Glob(filepath.Join(capturesDir, "tokenlab-*.ike"))
		for _, f := range old {
			os.Remove(f)
		}
		if err := os.MkdirAll(capturesDir, 0o755); err != nil {
			t.Fatal(err)
		}
		var names []string
		for name, b := range got {
			names = append(names, name)
			if err := os.WriteFile(filepath.Join(capturesDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		sort.Strings(names)
		t.Logf("wrote %d captures: %v", len(names), names)
	}
	for _, c := range readCaptures(t) {
		t.Run("stored/"+c.name, func(t *testing.T) { checkRoundTrip(t, c.b) })
	}
}
