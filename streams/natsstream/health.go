package natsstream

import (
	"context"
	"fmt"
	"time"
)

// silencePing bounds checkSilence's ping when Poll's context has no
// deadline.
const silencePing = 2 * time.Second

// checkSilence tells a dead connection from a slow server after a fetch
// that the server did not end (see fetch). A connection that died
// without a reset (a middlebox dropped its state) looks connected to the
// client for minutes, until its pings go unanswered, and every fetch on it
// comes back empty: Poll would report "nothing to do" while tasks pile
// up. So when the server did not answer the fetch, a ping checks it within
// ctx (or silencePing, if ctx has no deadline); if that fails too the connection is dropped and reconnected, and
// Poll reports the error.
func (s *Stream) checkSilence(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		// FlushWithContext refuses a context without a deadline, and
		// that refusal must not pass for a dead connection.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, silencePing)
		defer cancel()
	}
	err := s.nc.FlushWithContext(ctx)
	if err == nil {
		return nil // slow, but alive
	}
	rerr := s.nc.ForceReconnect()
	s.cfg.Logger.Warn("natsstream: the server did not answer a fetch or a ping; reconnecting",
		"stream", s.cfg.Stream, "err", err, "reconnect_err", rerr)
	return fmt.Errorf("natsstream: fetching from consumer %s: the server did not answer (the connection may be dead; reconnecting): %w",
		s.cfg.Consumer, err)
}
