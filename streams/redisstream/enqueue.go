package redisstream

import (
	"context"
	"time"

	"github.com/peonify/peonify"
	"github.com/redis/go-redis/v9"
)

// An Enqueue is split into script runs of at most chunkTasks tasks and
// about chunkBytes bytes, so that no run holds the server for long; the
// runs go in one pipeline.
const (
	chunkTasks = 500
	chunkBytes = 4 << 20
)

// Enqueue stores tasks in the queue, checking for duplicates and adding
// them in one atomic script run per chunk of 500: tasks due now are added
// to the stream (XADD), tasks with a RunAt in the future to the schedule.
// It fills empty IDs and EnqueuedAt (see peonify.Task.Prepare). A task
// with a Workflow label counts in that workflow (see GetWorkflow).
//
// A task whose ID is already stored (live, waiting, dead, cancelled, or
// done and kept for Config.ResultRetention), or was enqueued within
// Config.DedupWindow, or whose UniqueKey a live task holds, is not stored
// again: Enqueue stores the others and returns a *peonify.DuplicateError.
// A task is refused, before anything is stored, if it is invalid or has
// headers that are not valid UTF-8.
//
// When Enqueue returns nil the tasks are in Redis; whether they survive a
// crash of Redis itself depends on its persistence settings (appendonly,
// appendfsync). If it returns another error, some chunks may have been
// stored: enqueue the same tasks again, and the stored ones are reported as
// duplicates.
func (s *Stream) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	if s.closed.Load() {
		return peonify.ErrClosed
	}
	for _, t := range tasks {
		if err := checkTask(t); err != nil {
			return err
		}
	}
	if len(tasks) == 0 {
		return nil
	}
	now := time.Now()
	type chunk struct {
		args  []any
		tasks []*peonify.Task
	}
	var chunks []chunk
	var cur chunk
	size := 0
	for _, t := range tasks {
		_ = t.Prepare(now) // validated above
		f, err := fields(t)
		if err != nil {
			return err
		}
		due := int64(0)
		if !t.RunAt.IsZero() {
			// Rounded up: the schedule has milliseconds, and a task must
			// never run before its RunAt.
			due = (t.RunAt.UnixMicro() + 999) / 1000
		}
		cur.args = append(cur.args, t.ID, t.UniqueKey, due, len(f)/2)
		cur.args = append(cur.args, f...)
		cur.tasks = append(cur.tasks, t)
		size += len(t.Payload) + 256
		if len(cur.tasks) == chunkTasks || size >= chunkBytes {
			chunks = append(chunks, cur)
			cur, size = chunk{}, 0
		}
	}
	if len(cur.tasks) > 0 {
		chunks = append(chunks, cur)
	}

	window := max(s.cfg.DedupWindow.Milliseconds(), 0)
	calls := make([][]any, len(chunks))
	for i, c := range chunks {
		calls[i] = append([]any{window}, c.args...)
	}
	cmds := s.durable(ctx, enqueueScript, calls...)
	var dups []string
	stored := false
	var firstDue time.Time
	for i, cmd := range cmds {
		res, err := cmd.Slice()
		if err != nil {
			return s.redisError("enqueueing tasks", err)
		}
		for j, r := range res {
			if j >= len(chunks[i].tasks) {
				break
			}
			if n, ok := r.(int64); ok && n == 0 {
				dups = append(dups, chunks[i].tasks[j].ID)
				continue
			}
			if loc, _ := r.(string); loc == "s" {
				if t := chunks[i].tasks[j].RunAt; firstDue.IsZero() || t.Before(firstDue) {
					firstDue = t
				}
				continue
			}
			stored = true
		}
	}
	if stored {
		s.signal()
	}
	if !firstDue.IsZero() {
		s.noteDue(firstDue)
	}
	if len(dups) > 0 {
		return &peonify.DuplicateError{IDs: dups}
	}
	return nil
}

// runAll runs a script once for each argument list, in one pipeline. A run
// that found the server without the script (after a restart) is run again
// once the script is loaded: such a run did nothing.
func (s *Stream) runAll(ctx context.Context, sc *redis.Script, calls [][]any) []*redis.Cmd {
	if len(calls) == 1 {
		return []*redis.Cmd{s.run(ctx, sc, calls[0]...)}
	}
	args := func(a []any) []any { return append(s.head[:len(s.head):len(s.head)], a...) }
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, a := range calls {
		cmds[i] = sc.EvalSha(ctx, pipe, s.skeys, args(a)...)
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			cmds[i] = s.run(ctx, sc, calls[i]...)
		}
	}
	return cmds
}
