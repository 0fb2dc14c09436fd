package pgstream

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// listen holds one pool connection in LISTEN on the schema's channel and
// turns notifications for this queue into wake-ups, until ctx ends. A lost
// connection is replaced after a jittered, growing delay, and a wake-up is
// sent after every (re)connect since notifications may have been missed.
func (s *Stream) listen(ctx context.Context) {
	const minDelay, maxDelay = 100 * time.Millisecond, 10 * time.Second
	delay := minDelay
	for ctx.Err() == nil {
		connected, err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			delay = minDelay
		}
		s.cfg.Logger.Warn("pgstream: LISTEN connection lost; reconnecting",
			"queue", s.cfg.Queue, "err", err, "retry_in", delay)
		if !sleep(ctx, jitter(delay)) {
			return
		}
		delay = min(delay*2, maxDelay)
	}
}

// listenOnce runs one LISTEN session. It reports whether it got as far as
// listening, and why it ended.
func (s *Stream) listenOnce(ctx context.Context) (bool, error) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	// The connection never goes back to the pool: it may still be
	// listening, or be broken. The pool opens another when it needs one.
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return false, err
	}
	s.signal()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if n.Payload == s.cfg.Queue {
			s.signal()
		}
	}
}

// jitter spreads d randomly over [d/2, 3d/2) so that processors that lost
// the database together do not reconnect together.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
