package webhookstream

import (
	"context"
	"fmt"
	"sync"

	"github.com/peonify/peonify"
)

// Results lets a synchronous route (Route.Sync) answer a webhook with its
// task's result. It is a registry, in this process, of requests waiting for
// their tasks: the Handler registers a wait before it enqueues a task, and
// the processor's Middleware reports the task's first attempt to it.
//
// Wire the same Results into Config.Results and into the Processor that
// runs the tasks, in the same process:
//
//	results := webhookstream.NewResults()
//	p, err := peonify.New(peonify.Config{Middleware: []peonify.Middleware{results.Middleware()}})
//	...
//	hooks, err := webhookstream.New(store, webhookstream.Config{Results: results, Routes: ...})
//
// A task run by another process never reports here: its request times out
// after Route.SyncTimeout and is answered 202 Accepted, as an asynchronous
// route would be.
type Results struct {
	mu      sync.Mutex
	waiting map[string][]chan outcome
}

// NewResults returns an empty registry.
func NewResults() *Results {
	return &Results{waiting: make(map[string][]chan outcome)}
}

// outcome is the first attempt of a waited-for task.
type outcome struct {
	err   error
	reply *Reply // set by the handler with Respond; nil when it did not
}

// wait registers interest in the task with this ID. The channel receives
// the outcome of the next attempt to finish; cancel must be called when the
// caller stops waiting.
func (r *Results) wait(id string) (ch <-chan outcome, cancel func()) {
	c := make(chan outcome, 1)
	r.mu.Lock()
	r.waiting[id] = append(r.waiting[id], c)
	r.mu.Unlock()
	return c, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		list := r.waiting[id]
		for i, x := range list {
			if x == c {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(r.waiting, id)
		} else {
			r.waiting[id] = list
		}
	}
}

// waited reports whether a request waits for the task with this ID.
func (r *Results) waited(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiting[id]) > 0
}

// deliver hands o to every request waiting for the task and forgets them.
func (r *Results) deliver(id string, o outcome) {
	r.mu.Lock()
	list := r.waiting[id]
	delete(r.waiting, id)
	r.mu.Unlock()
	for _, c := range list {
		c <- o // buffered, and each channel is delivered to once
	}
}

// Middleware returns the processor middleware that reports task results to
// r. Add it to peonify.Config.Middleware. It costs a map lookup for tasks
// that no request waits for, and runs their handlers unchanged.
func (r *Results) Middleware() peonify.Middleware {
	return func(next peonify.Handler) peonify.Handler {
		return peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			if !r.waited(t.ID) {
				return next.Execute(ctx, t)
			}
			slot := &replySlot{}
			ctx = context.WithValue(ctx, replyKey{}, slot)
			finished := false
			defer func() {
				if !finished { // the handler panicked; the processor recovers it
					r.deliver(t.ID, outcome{err: fmt.Errorf("task %s panicked", t.ID)})
				}
			}()
			err := next.Execute(ctx, t)
			finished = true
			r.deliver(t.ID, outcome{err: err, reply: slot.get()})
			return err
		})
	}
}

// Reply is what a synchronous webhook answers when its task succeeds.
type Reply struct {
	// Status is the HTTP status code. Defaults to 200 OK; must be from 200
	// to 599.
	Status int

	// ContentType is the Content-Type of Body. Defaults to none, which lets
	// net/http sniff it.
	ContentType string

	// Body is the response body.
	Body []byte
}

type replyKey struct{}

type replySlot struct {
	mu    sync.Mutex
	reply *Reply
}

func (s *replySlot) get() *Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reply
}

// Respond sets the answer to the synchronous webhook request that waits for
// the task running with ctx, and reports whether one waits. Call it from a
// task handler before it returns nil; the last call wins. It does nothing,
// and returns false, when no request waits: the route is asynchronous, the
// request timed out, or Results.Middleware is not installed. The reply is
// used only if the handler then succeeds.
func Respond(ctx context.Context, r Reply) bool {
	slot, ok := ctx.Value(replyKey{}).(*replySlot)
	if !ok {
		return false
	}
	r.Body = append([]byte(nil), r.Body...)
	slot.mu.Lock()
	slot.reply = &r
	slot.mu.Unlock()
	return true
}
