package pgstream

import (
	"context"
	"time"
)

// cleanupBatch bounds one DELETE of finished tasks, so that the cleaner
// never holds many row locks or writes a huge transaction.
const cleanupBatch = 5000

// maintainTimeout bounds each statement of the rescuer and the cleaner,
// so that a dead connection cannot stall them until the operating system
// gives up on it.
const maintainTimeout = 30 * time.Second

// maintain runs the rescuer every RescueInterval and the cleaner every
// CleanupInterval until ctx ends. Every processor on a queue runs them;
// SKIP LOCKED keeps them from blocking each other or the claimers.
func (s *Stream) maintain(ctx context.Context) {
	rescue := time.NewTicker(s.cfg.RescueInterval)
	defer rescue.Stop()
	cleanup := time.NewTicker(s.cfg.CleanupInterval)
	defer cleanup.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rescue.C:
			if _, _, err := s.rescue(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("pgstream: rescuing expired leases failed", "queue", s.cfg.Queue, "err", err)
			}
		case <-cleanup.C:
			if _, err := s.cleanup(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("pgstream: deleting finished tasks failed", "queue", s.cfg.Queue, "err", err)
			}
		}
	}
}

// rescue makes tasks whose lease expired pending again (or dead when their
// own MaxAttempts is used up) and reports how many of each.
func (s *Stream) rescue(ctx context.Context) (pending, dead int, err error) {
	ctx, cancel := context.WithTimeout(ctx, maintainTimeout)
	defer cancel()
	var notified int
	err = s.pool.QueryRow(ctx, s.sql.rescue, s.cfg.Queue, s.channel).Scan(&pending, &dead, &notified)
	if err != nil {
		return 0, 0, s.dbError("rescuing expired leases", err)
	}
	if pending+dead > 0 {
		s.cfg.Logger.Info("pgstream: rescued tasks whose lease expired",
			"queue", s.cfg.Queue, "pending_again", pending, "dead", dead)
	}
	return pending, dead, nil
}

// cleanup deletes done tasks older than KeepDone and dead tasks older than
// KeepDead, and reports how many. It also deletes the rows of rate limits'
// buckets that are full again.
func (s *Stream) cleanup(ctx context.Context) (int, error) {
	total := 0
	if p := s.plan.Load(); p != nil && p.cleanBuckets != "" {
		stmt, cancel := context.WithTimeout(ctx, maintainTimeout)
		_, err := s.pool.Exec(stmt, p.cleanBuckets, s.cfg.Queue)
		cancel()
		if err != nil {
			return total, s.dbError("deleting full token buckets", err)
		}
	}
	for _, r := range []struct {
		state string
		keep  time.Duration
	}{{"done", s.cfg.KeepDone}, {"dead", s.cfg.KeepDead}} {
		if r.keep < 0 {
			continue // dead tasks kept until an operator deletes them
		}
		for {
			stmt, cancel := context.WithTimeout(ctx, maintainTimeout)
			tag, err := s.pool.Exec(stmt, s.sql.cleanup, s.cfg.Queue, r.state, r.keep.Microseconds(), cleanupBatch)
			cancel()
			if err != nil {
				return total, s.dbError("deleting "+r.state+" tasks", err)
			}
			n := int(tag.RowsAffected())
			total += n
			if n < cleanupBatch {
				break
			}
		}
	}
	return total, nil
}
