package pgstream

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
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
	// Dead workflow tasks settle their dependents in the same
	// transaction.
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			notified int
			wf, whys []string
		)
		if err := tx.QueryRow(ctx, s.sql.rescue, s.cfg.Queue, s.channel, s.fin).Scan(&pending, &dead, &notified, &wf, &whys); err != nil {
			return err
		}
		return s.settle(ctx, tx, wf, whys, true)
	})
	if err != nil {
		return 0, 0, s.dbError("rescuing expired leases", err)
	}
	if dead > 0 {
		s.kickWaiters()
	}
	if pending+dead > 0 {
		s.cfg.Logger.Info("pgstream: rescued tasks whose lease expired",
			"queue", s.cfg.Queue, "pending_again", pending, "dead", dead)
	}
	return pending, dead, nil
}

// cleanup deletes done tasks older than KeepDone (those with a result or a
// workflow: older than the larger of KeepDone and ResultRetention), and
// dead and cancelled tasks older than KeepDead, in bounded batches, and
// reports how many. It also deletes the rows of rate limits'
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
	keepKept := max(s.cfg.KeepDone, s.cfg.ResultRetention)
	for _, r := range []struct {
		what  string
		stmt  string
		state string // for s.sql.cleanup
		keep  time.Duration
	}{
		{"done", s.sql.cleanupPlainDone, "", s.cfg.KeepDone},
		{"done (with a result or workflow)", s.sql.cleanupKept, "", keepKept},
		{"dead", s.sql.cleanup, "dead", s.cfg.KeepDead},
		{"cancelled", s.sql.cleanup, "cancelled", s.cfg.KeepDead},
	} {
		if r.keep < 0 || r.keep == 0 && r.stmt == s.sql.cleanupPlainDone {
			// Dead tasks kept until an operator deletes them; without
			// KeepDone, done tasks without a result are deleted when
			// acked, and the kept ones are not looked through.
			continue
		}
		for {
			stmt, cancel := context.WithTimeout(ctx, maintainTimeout)
			args := []any{s.cfg.Queue, r.keep.Microseconds(), cleanupBatch}
			if r.state != "" {
				args = []any{s.cfg.Queue, r.state, r.keep.Microseconds(), cleanupBatch}
			}
			tag, err := s.pool.Exec(stmt, r.stmt, args...)
			cancel()
			if err != nil {
				return total, s.dbError("deleting "+r.what+" tasks", err)
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
