package peonify

import (
	"context"
	"errors"
	"time"
)

// watchdog times out running tasks and keeps their leases alive. It sleeps
// until the earliest timeout or extension among the running tasks; a worker
// starting a task that is due earlier kicks it awake.
func (p *Processor) watchdog(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := p.watchScan(time.Now())
		if next.IsZero() {
			p.watchArmed.Store(0)
			timer.Stop()
		} else {
			p.watchArmed.Store(next.UnixNano())
			timer.Reset(time.Until(next))
		}
		select {
		case <-done:
			return
		case <-timer.C:
		case <-p.watchKick:
		}
	}
}

// watchScan acts on every running task that is due at now and returns when
// the next one is due, or zero if nothing runs.
func (p *Processor) watchScan(now time.Time) time.Time {
	var next time.Time
	due := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if !s.running {
			s.mu.Unlock()
			continue
		}
		if !now.Before(s.timeoutAt) {
			if s.cancel != nil {
				s.cancel(ErrTaskTimeout)
			}
		} else {
			due(s.timeoutAt)
		}
		if s.lease > 0 && !s.leaseLost && !s.cancelled && !s.extending {
			if !now.Before(s.extendAt) {
				s.extending = true
				st, d, lease := s.st, s.d, s.lease
				p.renewing.Go(func() { p.renew(s, st, d, lease) })
			} else {
				due(s.extendAt)
			}
		}
		s.mu.Unlock()
	}
	return next
}

// renew extends the lease of the task running in s. On success the slot
// gets the renewed delivery; when the lease is lost the task's context is
// cancelled with ErrLeaseLost; after a transient error it tries again soon,
// and gives up once the lease has ended.
func (p *Processor) renew(s *slot, st *streamState, d Delivery, lease time.Duration) {
	nd, err := p.extend(st, d, lease)
	now := time.Now()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.extending = false
	if !s.running || s.d.Task != d.Task || s.d.Token != d.Token {
		return // the task ended meanwhile
	}
	switch {
	case err == nil:
		s.d = nd
		s.extendAt = now.Add(lease / 3)
	case errors.Is(err, ErrCancelled):
		s.cancelTask()
		p.log.Info("peonify: task cancelled while it ran; cancelling its context", "stream", st.name, "task_id", d.Task.ID)
	case errors.Is(err, ErrLeaseLost) || !now.Before(d.Deadline):
		s.leaseLost = true
		if s.cancel != nil {
			s.cancel(ErrLeaseLost)
		}
		p.log.Warn("peonify: lease lost while the task ran; cancelling it", "stream", st.name,
			"task_id", d.Task.ID, "err", err)
	default:
		s.extendAt = now.Add(min(lease/10, time.Second))
		p.log.Warn("peonify: extending a lease failed; will retry", "stream", st.name, "task_id", d.Task.ID, "err", err)
	}
	select {
	case p.watchKick <- struct{}{}:
	default:
	}
}

// extend calls the stream's Extend within a third of the lease (at least
// a second) and StoreTimeout.
func (p *Processor) extend(st *streamState, d Delivery, lease time.Duration) (Delivery, error) {
	limit := min(max(lease/3, time.Second), p.cfg.StoreTimeout)
	ctx, cancel := context.WithTimeout(p.calls, limit)
	defer cancel()
	nd, err := st.ext.Extend(ctx, d, lease)
	return nd, timedOut(ctx, "Extend", st, limit, err)
}

// cancelTask cancels the context of the task running in s, which the
// store reports cancelled: it is neither acked nor nacked afterwards. The
// caller holds s.mu.
func (s *slot) cancelTask() {
	s.cancelled = true
	if s.cancel != nil {
		s.cancel(ErrCancelled)
	}
}

// cancelled cancels the task running in s if it still runs the claim d.
func (p *Processor) cancelled(s *slot, d Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running && s.d.Task == d.Task && !s.cancelled {
		s.cancelTask()
		p.log.Info("peonify: task cancelled while it ran; cancelling its context", "task_id", d.Task.ID)
	}
}
