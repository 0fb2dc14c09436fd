package redisstream

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/redis/go-redis/v9"
)

// maxLimitedBatch caps one claim with limits, which does more work per
// task than XREADGROUP.
const maxLimitedBatch = 1000

// limitSet is what SetLimits keeps: the limits, and their form for the
// scripts.
type limitSet struct {
	limits  []peonify.Limit
	json    string // the limits for the scripts (see limitsJSON)
	version string // a hash of json: the claim counts the running tasks again when it changes
	layout  string // a hash of what the index depends on: the claim indexes the ready tasks again when it changes
}

var _ peonify.Limiter = (*Stream)(nil)

// SetLimits replaces the limits this stream's claims enforce (see "Flow
// control" in the package documentation). It checks them with
// peonify.NormalizeLimits and does no I/O. With no limits the stream claims
// with XREADGROUP, as without SetLimits.
//
// Every processor of a queue must be given the same limits: a processor
// without them reads new entries past the indexed ones, unlimited.
func (s *Stream) SetLimits(limits []peonify.Limit) error {
	norm, err := peonify.NormalizeLimits(limits)
	if err != nil {
		return err
	}
	if len(norm) == 0 {
		s.lim.Store(nil)
		return nil
	}
	js, err := limitsJSON(norm)
	if err != nil {
		return err
	}
	s.lim.Store(&limitSet{limits: norm, json: js, version: hash(js), layout: hash(layoutOf(norm))})
	return nil
}

// layoutOf describes what the index of ready tasks depends on: which
// types PerKey limits cover, whether any limit has a type, and the
// ordered limits. Other changes (a concurrency, a rate) keep the index.
func layoutOf(limits []peonify.Limit) string {
	var parts []string
	for _, l := range limits {
		switch {
		case l.Ordered:
			parts = append(parts, "o:"+l.Name+"\x00"+l.Type)
		case l.PerKey:
			parts = append(parts, "k:"+l.Type)
		case l.Type != "":
			parts = append(parts, "t")
		}
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), "\x01")
}

// hash returns a short hash of s.
func hash(s string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return strconv.FormatUint(h.Sum64(), 16)
}

// limitsJSON encodes normalized limits for the scripts: n name, t type,
// k PerKey, c Concurrency, kc KeyConcurrency, r Rate, p Period in ms,
// b Burst, o Ordered, l Local.
func limitsJSON(limits []peonify.Limit) (string, error) {
	type lim struct {
		N  string         `json:"n"`
		T  string         `json:"t"`
		K  bool           `json:"k"`
		C  int            `json:"c"`
		KC map[string]int `json:"kc,omitempty"`
		R  int            `json:"r"`
		P  float64        `json:"p"`
		B  int            `json:"b"`
		O  bool           `json:"o"`
		L  bool           `json:"l"`
	}
	out := make([]lim, len(limits))
	for i, l := range limits {
		out[i] = lim{N: l.Name, T: l.Type, K: l.PerKey, C: l.Concurrency, KC: l.KeyConcurrency,
			R: l.Rate, P: float64(l.Period) / float64(time.Millisecond), B: l.Burst, O: l.Ordered, L: l.Local}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("redisstream: encoding limits: %w", err)
	}
	return string(b), nil
}

// holdsPermits reports whether a limit of set applies to t with a
// concurrency (Ordered included): its Ack or Nack frees a permit.
func (ls *limitSet) holdsPermits(t *peonify.Task) bool {
	for _, l := range ls.limits {
		if (l.Concurrency > 0 || len(l.KeyConcurrency) > 0) && l.Applies(t) {
			return true
		}
	}
	return false
}

// pollLimited is poll for a stream with limits: one script run takes back
// this consumer's own entries when due, hands entries whose lease ended
// back to their queues, indexes new entries and claims what the limits
// admit, pipelined with the move of due scheduled tasks into the stream.
func (s *Stream) pollLimited(ctx context.Context, ls *limitSet, limit int, start time.Time) ([]peonify.Delivery, error) {
	limit = min(limit, maxLimitedBatch)
	rescue := false
	if last := s.lastRescue.Load(); start.UnixNano()-last >= int64(s.cfg.RescueInterval) {
		rescue = s.lastRescue.CompareAndSwap(last, start.UnixNano())
	}
	own := rescue || s.readOwn.Load()
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	args := []any{ls.json, s.cfg.Lease.Milliseconds(), limit, flag(rescue), flag(own), ls.version, ls.layout}
	if own {
		// Taking back own entries excludes the other polls of this stream
		// (see poll).
		s.pollMu.Lock()
		defer s.pollMu.Unlock()
		s.mu.Lock()
		for id := range s.inflight {
			args = append(args, id)
		}
		s.mu.Unlock()
	} else {
		s.pollMu.RLock()
		defer s.pollMu.RUnlock()
	}

	var promote *redis.Cmd
	var claim *redis.Cmd
	if last := s.lastPromote.Load(); start.UnixNano()-last >= int64(promoteEvery) && s.lastPromote.CompareAndSwap(last, start.UnixNano()) {
		pipe := s.client.Pipeline()
		promote = promoteScript.EvalSha(ctx, pipe, s.skeys, s.promoteArgs()...)
		claim = claimLimitedScript.EvalSha(ctx, pipe, s.skeys, append(s.head[:len(s.head):len(s.head)], args...)...)
		_, _ = pipe.Exec(ctx)
		if err := promote.Err(); isNoScript(err) {
			s.lastPromote.Store(0)
			_ = promoteScript.Load(ctx, s.client).Err()
		} else if err != nil {
			s.lastPromote.Store(0)
		}
		if isNoScript(claim.Err()) {
			claim = s.run(ctx, claimLimitedScript, args...)
		}
	} else {
		claim = s.run(ctx, claimLimitedScript, args...)
	}
	res, err := claim.Slice()
	if err != nil && isNoGroup(err) {
		if err := s.ensureGroup(ctx); err != nil {
			return nil, err
		}
		res, err = s.run(ctx, claimLimitedScript, args...).Slice()
	}
	if err != nil {
		if own {
			s.readOwn.Store(true)
		}
		return nil, s.redisError("claiming tasks under limits", err)
	}
	if len(res) != 3 {
		return nil, s.redisError("claiming tasks under limits", errors.New("unexpected reply from the claim script"))
	}
	list, _ := res[0].([]any)
	ownN, _ := res[1].(int64)
	wait, _ := res[2].(int64)
	if own {
		s.readOwn.Store(int(ownN) == limit) // there may be more
	}
	deadline := s.deadline(start)
	ds := make([]peonify.Delivery, 0, len(list))
	for _, r := range list {
		triple, _ := r.([]any)
		if len(triple) != 3 {
			continue
		}
		eid, _ := triple[0].(string)
		fl, _ := triple[1].([]any)
		count, _ := triple[2].(int64)
		if eid == "" || count <= 0 || len(ds) == limit {
			continue
		}
		e := entryFromList(fl)
		t := e.task(eid)
		t.Attempt = e.counted() + int(count)
		ds = append(ds, peonify.Delivery{Task: t, Token: uint64(count), Deadline: deadline, Ref: eid})
	}
	s.track(ds)
	if wait >= 0 {
		// A rate token falls due, or a lease ends, then: look again.
		s.noteDue(time.Now().Add(time.Duration(wait+1) * time.Millisecond))
	}
	return ds, nil
}

// ackLimited is Ack for a stream with limits.
func (s *Stream) ackLimited(ctx context.Context, ls *limitSet, ds []peonify.Delivery) error {
	type item struct {
		eid string
		d   peonify.Delivery
	}
	items := make([]item, 0, len(ds))
	var uniques []any
	lo, hi := "", ""
	frees := false
	for _, d := range ds {
		eid := ref(d)
		if eid == "" {
			continue
		}
		if lo == "" || entryLess(eid, lo) {
			lo = eid
		}
		if hi == "" || entryLess(hi, eid) {
			hi = eid
		}
		items = append(items, item{eid, d})
		if d.Task.UniqueKey != "" {
			uniques = append(uniques, eid, d.Task.UniqueKey)
		}
		frees = frees || ls.holdsPermits(d.Task)
	}
	n := len(items)
	if n == 0 {
		return nil
	}
	args := make([]any, 3+3*n, 3+5*n+len(uniques)+1)
	args[0], args[1], args[2] = lo, hi, n
	for i, it := range items {
		args[3+i], args[3+n+i], args[3+2*n+i] = it.eid, it.d.Token, it.d.Task.ID
	}
	args = append(args, uniques...)
	var kept []any
	for i, it := range items {
		kept = keep(kept, i+1, it.d)
	}
	args = append(append(args, kept...), len(kept)/3)
	for _, it := range items {
		args = append(args, it.d.Task.Type)
	}
	for _, it := range items {
		args = append(args, it.d.Task.Key)
	}
	args = append(args, ls.json)
	released, err := s.runDurable(ctx, ackLimitedScript, args...).Int()
	s.untrack(ds...)
	if err != nil {
		return s.redisError("acking tasks", err)
	}
	if frees || released > 0 {
		s.signal() // a permit is free: a held task may start
	}
	return nil
}

// LimitStats reports, for each limit given to SetLimits, the running
// tasks it counts and the ready tasks it applies to, with the busiest
// keys of a PerKey limit. It reads every queue of ready tasks and every
// running task claimed under limits: an operator's tool. A stream without
// limits reports none.
func (s *Stream) LimitStats(ctx context.Context) ([]peonify.LimitStat, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	ls := s.lim.Load()
	if ls == nil {
		return nil, nil
	}
	res, err := s.run(ctx, limitStatsScript, ls.json).Slice()
	if err != nil {
		return nil, s.redisError("reading limit stats", err)
	}
	if len(res) != 3 {
		return nil, s.redisError("reading limit stats", errors.New("unexpected reply"))
	}
	type use struct{ inUse, waiting int }
	stats := make([]peonify.LimitStat, len(ls.limits))
	keys := make([]map[string]*use, len(ls.limits))
	count := func(typ, key string, inUse, waiting int) {
		t := &peonify.Task{Type: typ, Key: key}
		for i, l := range ls.limits {
			if l.Local || !l.Applies(t) {
				continue
			}
			inUse := inUse
			if l.Concurrency == 0 && len(l.KeyConcurrency) == 0 {
				inUse = 0 // a rate or fairness limit counts no running tasks
			}
			stats[i].InUse += inUse
			stats[i].Waiting += waiting
			if l.PerKey {
				if keys[i] == nil {
					keys[i] = make(map[string]*use)
				}
				u := keys[i][key]
				if u == nil {
					u = &use{}
					keys[i][key] = u
				}
				u.inUse += inUse
				u.waiting += waiting
			}
		}
	}
	queues := replyPairs(res[0])
	for _, q := range queues {
		if typ, key, ok := splitQueue(q.first); ok && q.n > 0 {
			count(typ, key, 0, int(q.n))
		}
	}
	for _, r := range replyPairs(res[1]) {
		count(r.first, r.second, 1, 0)
	}
	for _, r := range replyPairs(res[2]) {
		for i, l := range ls.limits {
			if l.Local && l.Name == r.first {
				stats[i].InUse = int(r.n)
			}
		}
	}
	// Waiting of a Local limit: the ready tasks of its type.
	for i, l := range ls.limits {
		if !l.Local {
			continue
		}
		for _, q := range queues {
			if typ, key, ok := splitQueue(q.first); ok && l.Applies(&peonify.Task{Type: typ, Key: key}) {
				stats[i].Waiting += int(q.n)
			}
		}
	}
	for i, l := range ls.limits {
		stats[i].Name = l.Name
		if keys[i] == nil {
			continue
		}
		ks := make([]peonify.KeyStat, 0, len(keys[i]))
		for k, u := range keys[i] {
			ks = append(ks, peonify.KeyStat{Key: k, InUse: u.inUse, Waiting: u.waiting})
		}
		slices.SortFunc(ks, func(a, b peonify.KeyStat) int {
			return cmp.Or(cmp.Compare(b.InUse+b.Waiting, a.InUse+a.Waiting), strings.Compare(a.Key, b.Key))
		})
		stats[i].Keys = ks[:min(len(ks), peonify.MaxLimitStatKeys)]
	}
	return stats, nil
}

// splitQueue reads a queue name of the scripts: #type ':' type key.
func splitQueue(q string) (typ, key string, ok bool) {
	i := strings.IndexByte(q, ':')
	if i <= 0 {
		return "", "", false
	}
	n, err := strconv.Atoi(q[:i])
	if err != nil || n < 0 || i+1+n > len(q) {
		return "", "", false
	}
	return q[i+1 : i+1+n], q[i+1+n:], true
}

// unlimitBatch is how many queues' indexes one run of unlimitScript
// undoes. A poll without limits runs it at each look for expired leases,
// in the same round trip (see Stream.claim), to undo, a little at a time,
// the index of ready tasks that claims with limits left when the limits
// were removed; it returns at once when there is no index.
const unlimitBatch = 100

// unlimited logs the outcome of a run of unlimitScript.
func (s *Stream) unlimited(cmd *redis.Cmd) {
	n, err := cmd.Int()
	switch {
	case err != nil:
		s.cfg.Logger.Debug("redisstream: could not undo the index of a queue claimed with limits", "queue", s.cfg.Queue, "err", err)
	case n > 0:
		s.cfg.Logger.Info("redisstream: moving the ready tasks that claims with limits indexed back to the stream", "queue", s.cfg.Queue, "left", n)
	}
}

// replyPair is a two-element array of a script's reply: its first element,
// a string, and its second as a string or as an integer, whichever it is
// (the other is the zero value).
type replyPair struct {
	first, second string
	n             int64
}

// replyPairs returns the two-element arrays in the array v of a script's
// reply, and skips any other element.
func replyPairs(v any) []replyPair {
	a, _ := v.([]any)
	ps := make([]replyPair, 0, len(a))
	for _, e := range a {
		pair, _ := e.([]any)
		if len(pair) != 2 {
			continue
		}
		var p replyPair
		p.first, _ = pair[0].(string)
		p.second, _ = pair[1].(string)
		p.n, _ = pair[1].(int64)
		ps = append(ps, p)
	}
	return ps
}
