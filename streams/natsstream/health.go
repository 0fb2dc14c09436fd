package natsstream

import (
	"context"
	"fmt"
	"time"
)

// fetchNoReply is how long a no-wait fetch takes when the server sends
// nothing back: the client gives up on the request after a second and
// reports no messages and no error, as if the consumer were empty. A live
// server answers an empty consumer at once.
const fetchNoReply = 900 * time.Millisecond

// checkSilence tells a dead connection from an empty consumer after a
// fetch that returned nothing and began at start. A connection that died
// without a reset (a middlebox dropped its state) looks connected to the
// client for minutes, until its pings go unanswered, and every fetch on it
// comes back empty: Poll would report "nothing to do" while tasks pile
// up. So when the server did not answer the fetch, a ping checks it within
// ctx; if that fails too the connection is dropped and reconnected, and
// Poll reports the error.
func (s *Stream) checkSilence(ctx context.Context, start time.Time) error {
	if time.Since(start) < fetchNoReply {
		return nil // the server answered
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
