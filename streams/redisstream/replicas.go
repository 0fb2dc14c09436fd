package redisstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is wrapped by the error of a write made with
// Config.WaitReplicas when fewer replicas than asked acknowledged it
// within Config.WaitTimeout. The write was applied on the master: an
// Enqueue that returns it stored its tasks (enqueue them again to be sure:
// the second Enqueue reports them as duplicates, and waits for the
// replicas again), and an Ack or Nack that returns it took effect. What the
// error says is that a failover before the replicas catch up may undo the
// write.
var ErrNotReplicated = errors.New("fewer replicas than Config.WaitReplicas acknowledged the write")

// ReplicationError is the error of a write that fewer replicas than
// Config.WaitReplicas acknowledged within Config.WaitTimeout. It wraps
// ErrNotReplicated.
type ReplicationError struct {
	Wanted int // Config.WaitReplicas
	Got    int // the replicas that acknowledged the write, as WAIT counted them
}

// Error says how many replicas acknowledged the write.
func (e *ReplicationError) Error() string {
	return fmt.Sprintf("%d of the %d replicas asked for (Config.WaitReplicas) acknowledged the write in time: it was applied on the master but a failover may undo it", e.Got, e.Wanted)
}

// Unwrap returns ErrNotReplicated.
func (e *ReplicationError) Unwrap() error { return ErrNotReplicated }

// runDurable is s.run followed, with Config.WaitReplicas, by WAIT (see
// durable).
func (s *Stream) runDurable(ctx context.Context, sc *redis.Script, args ...any) *redis.Cmd {
	return s.durable(ctx, sc, args)[0]
}

// checkWaitClient reports whether WAIT can follow the stream's writes on
// client: it needs to know the connection the write went through.
func checkWaitClient(client redis.UniversalClient) error {
	switch client.(type) {
	case *redis.Client, *redis.ClusterClient:
		return nil
	}
	return fmt.Errorf("redisstream: Config.WaitReplicas needs a *redis.Client (a server, or Sentinel's failover client) or a *redis.ClusterClient, got %T", client)
}

// durable runs sc once for each argument list, like runAll, and with
// Config.WaitReplicas, WAITs on the same connection after the last run
// until that many replicas have acknowledged every write the master made
// so far, or Config.WaitTimeout has passed. A run's error is its command's;
// too few replicas make every successful run's command fail with a
// *ReplicationError.
func (s *Stream) durable(ctx context.Context, sc *redis.Script, calls ...[]any) []*redis.Cmd {
	if s.cfg.WaitReplicas == 0 {
		return s.runAll(ctx, sc, calls)
	}
	var cmds []*redis.Cmd
	for try := 0; ; try++ {
		var retry bool
		cmds, retry = s.durableOnce(ctx, sc, calls)
		if !retry || try == 3 || ctx.Err() != nil {
			return cmds
		}
		// The slot moved (a failover) or its master is gone: learn the new
		// layout, and run again where the slot is now. The runs did
		// nothing.
		if cc, ok := s.client.(*redis.ClusterClient); ok {
			cc.ReloadState(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100<<try) * time.Millisecond):
		}
	}
}

// durableOnce is one try of durable. It reports whether the runs failed
// without running (the slot is served elsewhere, or the node is down),
// so that they may run again.
func (s *Stream) durableOnce(ctx context.Context, sc *redis.Script, calls [][]any) ([]*redis.Cmd, bool) {
	cmds := make([]*redis.Cmd, len(calls))
	var node *redis.Client
	switch c := s.client.(type) {
	case *redis.Client:
		node = c
	case *redis.ClusterClient:
		n, err := c.MasterForKey(ctx, s.keys.Stream)
		if err != nil {
			for i := range cmds {
				cmds[i] = redis.NewCmd(ctx)
				cmds[i].SetErr(err)
			}
			return cmds, true
		}
		node = n
	}
	args := func(a []any) []any { return append(s.head[:len(s.head):len(s.head)], a...) }
	var wait *redis.Cmd
	for try := 0; try < 2; try++ {
		// A pipeline runs on one connection: WAIT waits for the writes
		// that connection made.
		pipe := node.Pipeline()
		for i, a := range calls {
			cmds[i] = sc.EvalSha(ctx, pipe, s.skeys, args(a)...)
		}
		// WAIT waits for the connection's last write that was
		// replicated: the fence makes that one come after every write
		// the master made so far, this batch's and, if it found its work
		// done already, an earlier try's.
		pipe.Set(ctx, s.keys.Fence, "1", time.Minute)
		wait = pipe.Do(ctx, "wait", s.cfg.WaitReplicas, s.cfg.WaitTimeout.Milliseconds())
		_, _ = pipe.Exec(ctx)
		if !isNoScript(cmds[0].Err()) {
			break
		}
		// The server lost its script cache: the runs did nothing. Load
		// the script and run them again.
		if err := sc.Load(ctx, node).Err(); err != nil {
			break
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return cmds, movedOrDown(err)
		}
	}
	got, err := wait.Int64()
	if err == nil && got < int64(s.cfg.WaitReplicas) {
		err = &ReplicationError{Wanted: s.cfg.WaitReplicas, Got: int(got)}
	} else if err != nil {
		err = fmt.Errorf("waiting for %d replicas (Config.WaitReplicas) to acknowledge the write, which the master applied: %w", s.cfg.WaitReplicas, err)
	}
	if err != nil {
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
	}
	return cmds, false
}

// movedOrDown reports whether err says that a command did not run because
// its slot is served by another node, the cluster is down, or the node
// could not be reached.
func movedOrDown(err error) bool {
	for _, p := range []string{"MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "LOADING", "MASTERDOWN"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
