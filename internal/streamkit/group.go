package streamkit

import (
	"context"
	"sync"
)

// Group runs a stream's background goroutines: each gets a context that
// ends at Cancel, and Wait waits for all of them. Once cancelled, a Group
// starts nothing more, so a goroutine started by a call that raced with
// Close never outlives it. The zero value is ready to use; a Group must
// not be copied.
type Group struct {
	mu       sync.Mutex
	ctx      context.Context
	cancel   context.CancelFunc
	canceled bool
	wg       sync.WaitGroup
}

// Go runs fn in a new goroutine of the group, with a context that ends at
// Cancel. After Cancel it does nothing.
func (g *Group) Go(fn func(ctx context.Context)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.canceled {
		return
	}
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
	}
	ctx := g.ctx
	g.wg.Go(func() { fn(ctx) })
}

// Cancel ends the context of the group's goroutines, and keeps Go from
// starting more. It does not wait for them (see Wait). It is idempotent.
func (g *Group) Cancel() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.canceled = true
	if g.cancel != nil {
		g.cancel()
	}
}

// Wait waits until every goroutine of the group has returned, and returns
// nil, or until ctx ends first, and returns ctx's error; the goroutines
// then go on to stop on their own. Call it after Cancel.
func (g *Group) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop cancels the group and waits for its goroutines, as Cancel and then
// Wait.
func (g *Group) Stop(ctx context.Context) error {
	g.Cancel()
	return g.Wait(ctx)
}
