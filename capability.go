package peonify

import "fmt"

// wrapper is a stream that wraps another (see Stream).
type wrapper interface {
	Unwrap() Stream
}

// As finds the first stream in the chain of s and the streams that its
// Unwrap methods return that is a T, and returns it. T is usually one of
// the optional interfaces (Extender, PollLimiter, Waker, Starter, Namer,
// Enqueuer, Inspector, Limiter, Tracker, WorkflowStore) or a stream
// package's concrete type:
//
//	if in, ok := peonify.As[peonify.Inspector](s); ok {
//		counts, err := in.Counts(ctx)
//		...
//	}
//
// As tries s first, then Unwrap's result, and so on, the way
// net/http.ResponseController looks through a ResponseWriter: a wrapper
// that intercepts a capability is found before the stream it wraps, and
// one that passes it through is looked past. The processor, the
// conformance suite (peonifytest), the CLI and the dashboard find
// capabilities with As.
func As[T any](s Stream) (T, bool) {
	for s != nil {
		if t, ok := s.(T); ok {
			return t, true
		}
		w, ok := s.(wrapper)
		if !ok {
			break
		}
		s = w.Unwrap()
	}
	var zero T
	return zero, false
}

// streamName returns the name of s as the processor shows it: its Namer's
// name (found with As), or else the Go type of the innermost stream.
func streamName(s Stream) string {
	if n, ok := As[Namer](s); ok {
		return n.Name()
	}
	for {
		w, ok := s.(wrapper)
		if !ok {
			break
		}
		inner := w.Unwrap()
		if inner == nil {
			break
		}
		s = inner
	}
	return fmt.Sprintf("%T", s)
}
