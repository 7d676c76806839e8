package cardsock

import (
	"context"
	"sync"
)

// Watcher follows the presence of a served card over a connection of its own, so that a host
// can react to a removal at once (an SSH session closed when its key's card leaves). It has
// the Present, Removals and Changed methods of *emulator.Card.
//
// A broken connection to the daemon counts as a removal that lasts: with the daemon gone, the
// card is gone with its reader.
type Watcher struct {
	conn   *Conn
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	present  bool
	removals uint64
	changed  chan struct{}
	err      error
}

// Watch connects to the card socket at path and follows its card until Close.
func Watch(ctx context.Context, path string) (*Watcher, error) {
	k, err := Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	present, removals, err := k.Status(ctx)
	if err != nil {
		k.Close()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{conn: k, cancel: cancel, done: make(chan struct{}),
		present: present, removals: removals, changed: make(chan struct{})}
	go w.run(wctx)
	return w, nil
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	defer w.conn.Close()
	present, removals := w.Present(), w.Removals()
	for {
		var err error
		present, removals, err = w.conn.WaitChange(ctx, present, removals)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.set(false, w.Removals()+1, err)
			return
		}
		w.set(present, removals, nil)
	}
}

func (w *Watcher) set(present bool, removals uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.present, w.removals, w.err = present, removals, err
	close(w.changed)
	w.changed = make(chan struct{})
}

// Present reports whether the card is in its reader, as last heard from the daemon.
func (w *Watcher) Present() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.present
}

// Removals returns how many times the card has been removed; a lost daemon counts as one more.
func (w *Watcher) Removals() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.removals
}

// Changed returns a channel closed at the next change of Present or Removals.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Err returns why the watch ended, when the connection to the daemon broke.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close ends the watch and its connection.
func (w *Watcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}
