package sqlitestream

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/peonify/peonify"
)

// limitSet is what SetLimits keeps: the normalized limits and what the
// claim asks of them on every row.
type limitSet struct {
	limits []peonify.Limit

	// perKeyAll is true when a PerKey limit applies to every type;
	// otherwise perKeyTypes lists the types some PerKey limit applies to.
	// A task with a key and such a type is "keyed": it takes part in the
	// round robin between keys.
	perKeyAll   bool
	perKeyTypes map[string]bool

	// typed is true when some limit applies to one type only.
	typed bool

	// holds is true when a limit counts running tasks (a Concurrency, a
	// KeyConcurrency or Ordered): an Ack or a Nack of a task it applies to
	// frees a permit and wakes the processor.
	holds bool
}

// SetLimits replaces the limits that Poll enforces (see peonify.Limiter
// and the package documentation's "Flow control"). It checks them with
// peonify.NormalizeLimits and does no I/O. With no limits, Poll claims as
// if SetLimits had never been called.
func (s *Stream) SetLimits(limits []peonify.Limit) error {
	ls, err := peonify.NormalizeLimits(limits)
	if err != nil {
		return err
	}
	if len(ls) == 0 {
		s.limits.Store(nil)
		return nil
	}
	set := &limitSet{perKeyTypes: map[string]bool{}}
	for _, l := range ls {
		l.KeyConcurrency = maps.Clone(l.KeyConcurrency) // the caller's map may change
		set.limits = append(set.limits, l)
		if l.PerKey {
			if l.Type == "" {
				set.perKeyAll = true
			}
			set.perKeyTypes[l.Type] = true
		}
		if l.Type != "" {
			set.typed = true
		}
		if l.Concurrency > 0 || len(l.KeyConcurrency) > 0 || l.Ordered {
			set.holds = true
		}
	}
	s.limits.Store(set)
	return nil
}

// keyed reports whether a task of type typ with key takes part in the
// round robin between keys.
func (ls *limitSet) keyed(typ, key string) bool {
	return key != "" && (ls.perKeyAll || ls.perKeyTypes[typ])
}

// holdsAny reports whether finishing one of ds frees a permit.
func (ls *limitSet) holdsAny(ds ...peonify.Delivery) bool {
	if ls == nil || !ls.holds {
		return false
	}
	for _, d := range ds {
		for _, l := range ls.limits {
			if d.Task != nil && applies(l, d.Task.Type, d.Task.Key) &&
				(l.Concurrency > 0 || len(l.KeyConcurrency) > 0) {
				return true
			}
		}
	}
	return false
}

// applies is peonify.Limit.Applies for a task's type and key.
func applies(l peonify.Limit, typ, key string) bool {
	return (l.Type == "" || l.Type == typ) && (!l.PerKey || key != "")
}

// bucket is a rate limit's token bucket as one claim sees it.
type bucket struct {
	tokens float64
	at     int64 // Unix nanoseconds of tokens
	dirty  bool  // a token was taken: write it back
}

// head is the live task of a key received first, for an Ordered limit.
type head struct {
	rowid   int64
	pending bool // claimable now; otherwise running or scheduled
}

// blocked says why a task cannot be claimed now, and how much of the
// rest of the claim that rules out.
type blocked int

const (
	admitted   blocked = iota
	blockedRow         // this task only (not the head of its key)
	blockedKey         // every task of the same type and key
	blockedAll         // every task of the same type
)

// claim is the state of one limit-aware claim: what the limits have in
// use, counted in the transaction, plus what the claim took so far.
type claim struct {
	s   *Stream
	tx  *wtx
	ls  *limitSet
	now int64

	use     []int            // non-PerKey limits: running tasks counted (this instance's, when Local)
	keyUse  []map[string]int // PerKey limits: running tasks per key
	buckets map[[2]string]*bucket
	heads   map[[2]string]head

	rateAt int64 // when the earliest token a blocked task waits for is due; 0 if none

	// wantHead is, after admit refused a task with blockedRow, the rowid
	// of the pending head of its ordered key.
	wantHead int64
}

// bucketKey identifies limit l's bucket for a task with key.
func bucketKey(l peonify.Limit, key string) [2]string {
	if !l.PerKey {
		key = ""
	}
	return [2]string{l.Name, key}
}

// load counts the running tasks each limit has in use.
func (c *claim) load() error {
	n := len(c.ls.limits)
	c.use = make([]int, n)
	c.keyUse = make([]map[string]int, n)
	for i, l := range c.ls.limits {
		if l.PerKey {
			c.keyUse[i] = map[string]int{}
		}
	}
	c.buckets = map[[2]string]*bucket{}
	c.heads = map[[2]string]head{}
	rows, err := c.tx.st.runningUse.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			typ, key string
			by       int64
		)
		if err := rows.Scan(&typ, &key, &by); err != nil {
			return err
		}
		for i, l := range c.ls.limits {
			switch {
			case !applies(l, typ, key):
			case l.PerKey:
				c.keyUse[i][key]++
			case !l.Local || by == c.s.instance:
				c.use[i]++
			}
		}
	}
	return rows.Err()
}

// bucket returns limit l's bucket for key, refilled up to now. A bucket
// not in the file yet is full.
func (c *claim) bucket(l peonify.Limit, key string) (*bucket, error) {
	id := bucketKey(l, key)
	b := c.buckets[id]
	if b == nil {
		b = &bucket{tokens: float64(l.Burst), at: c.now}
		var tokens float64
		var at int64
		switch err := c.tx.st.bucketGet.QueryRow(id[0], id[1]).Scan(&tokens, &at); err {
		case nil:
			b.tokens, b.at = tokens, at
		case sql.ErrNoRows:
		default:
			return nil, err
		}
		c.buckets[id] = b
	}
	if c.now > b.at {
		b.tokens += float64(c.now-b.at) * float64(l.Rate) / float64(l.Period)
		b.at = c.now
	}
	b.tokens = min(b.tokens, float64(l.Burst)) // also when Burst was lowered
	return b, nil
}

// head returns the first live task of key that l applies to.
func (c *claim) head(l peonify.Limit, key string) (head, error) {
	id := [2]string{l.Type, key}
	if h, ok := c.heads[id]; ok {
		return h, nil
	}
	var (
		h     head
		state string
	)
	err := c.tx.st.keyHead.QueryRow(key, l.Type).Scan(&h.rowid, &state)
	if err != nil && err != sql.ErrNoRows {
		return h, err
	}
	h.pending = state == "pending"
	c.heads[id] = h
	return h, nil
}

// admit reports whether every limit admits the task, and if not what the
// refusal rules out. It changes nothing; take does.
func (c *claim) admit(rowid int64, typ, key string) (blocked, error) {
	worst := admitted
	c.wantHead = 0
	for i, l := range c.ls.limits {
		if !applies(l, typ, key) {
			continue
		}
		why := admitted
		scope := blockedAll
		if l.PerKey {
			scope = blockedKey
		}
		if n, ok := l.ConcurrencyFor(key); ok { // KeyConcurrency 0 is ok with n 0: the key is held
			inUse := c.use[i]
			if l.PerKey {
				inUse = c.keyUse[i][key]
			}
			if inUse >= n {
				why = scope
			}
		}
		if why == admitted && l.Ordered {
			h, err := c.head(l, key)
			if err != nil {
				return 0, fmt.Errorf("find the head of key %q: %w", key, err)
			}
			switch {
			case !h.pending:
				why = blockedKey // the head runs, or waits for its retry
			case h.rowid != rowid:
				why = blockedRow // the head is another pending task
				c.wantHead = h.rowid
			}
		}
		if why == admitted && l.Rate > 0 {
			b, err := c.bucket(l, key)
			if err != nil {
				return 0, fmt.Errorf("read the token bucket of limit %s: %w", l.Name, err)
			}
			if b.tokens < 1 {
				why = scope
				c.rateDue(l, b)
			}
		}
		if why > worst {
			worst = why
		}
		if worst == blockedAll {
			break
		}
	}
	return worst, nil
}

// take counts a claimed task against every limit that applies to it.
func (c *claim) take(typ, key string) {
	for i, l := range c.ls.limits {
		if !applies(l, typ, key) {
			continue
		}
		if l.PerKey {
			c.keyUse[i][key]++
		} else {
			c.use[i]++
		}
		if l.Ordered {
			c.heads[[2]string{l.Type, key}] = head{} // running now: the key waits
		}
		if l.Rate > 0 {
			b := c.buckets[bucketKey(l, key)] // loaded by admit
			b.tokens--
			b.dirty = true
		}
	}
}

// candidate is a pending task the claim has looked at.
type candidate struct {
	rowid    int64
	id       string
	typ, key string
	priority int64
	visible  int64 // visible_at: when it became ready
	rank     int   // 1: its key's first task in the claim, or a task of no key; 2: the second...
}

// usual orders tasks as the plain claim does: highest priority first,
// then the longest ready, then the first received.
func usual(a, b candidate) int {
	if c := cmp.Compare(b.priority, a.priority); c != 0 {
		return c
	}
	if c := cmp.Compare(a.visible, b.visible); c != 0 {
		return c
	}
	return cmp.Compare(a.rowid, b.rowid)
}

// group is the pending tasks of one key and type, which the groups index
// keeps together in the usual order: what a claim reads of a key beyond
// the first tasks of the file.
type group struct{ key, typ string }

// compare orders groups as the groups index does.
func (g group) compare(h group) int {
	if c := strings.Compare(g.key, h.key); c != 0 {
		return c
	}
	return strings.Compare(g.typ, h.typ)
}

// keyScan is what a claim has seen of one key.
type keyScan struct {
	first   bool    // the key's first ready task was claimed: the others wait for the next round
	blocked bool    // no task of this key can be claimed
	groups  []group // the key's groups whose later tasks the next rounds may take
}

func (ks *keyScan) addGroup(g group) {
	if !slices.Contains(ks.groups, g) {
		ks.groups = append(ks.groups, g)
	}
}

// picker is one claim's choice of tasks.
type picker struct {
	c         *claim
	limit     int
	picks     []candidate
	taken     map[int64]bool
	takenIn   map[group]int
	seen      map[int64]bool // read by the window
	seenIn    map[group]int  // how many of a group's tasks the window read
	keys      map[string]*keyScan
	keyOrder  []string // keys in the order the claim met them
	blockKeys map[group]bool
	blockType map[string]bool
	none      bool // a limit of every type refuses everything: stop
}

func (p *picker) full() bool { return p.none || len(p.picks) >= p.limit }

func (p *picker) key(k string) *keyScan {
	ks := p.keys[k]
	if ks == nil {
		ks = &keyScan{}
		p.keys[k] = ks
		p.keyOrder = append(p.keyOrder, k)
	}
	return ks
}

// windowSize is how many pending tasks a claim of up to limit tasks reads
// in the usual order before it reads by group: a few more than it asks
// for, but no more than windowMax, since in a large claim most of the
// first tasks may belong to keys that take only one.
func windowSize(limit int) int { return min(limit, windowMax) + windowExtra }

const (
	windowMax   = 48
	windowExtra = 16
)

// pick chooses up to limit pending tasks that the limits admit and counts
// them against the limits, in the order they are to be delivered.
//
// The first round of the round robin takes the first ready task of each
// key, and every task of no key, that the limits admit. It reads them in
// two ways, so that its cost follows the tasks it takes and the keys it
// passes, never the number of tasks waiting: first the window, the first
// limit+windowExtra pending tasks in the usual order (priority, then the
// longest ready), which serves most claims on its own; then, when the
// window held too few tasks it could take, the groups (the pending tasks
// of one key and type, in the groups index), one head at a time, going
// on from the group where the previous claim stopped and wrapping around,
// so that the claims take turns over every key. The next rounds read the
// next tasks of the keys that took one and have room for more, and take
// every key's second task before any key's third. A task a limit refuses
// is skipped, and with it every task that limit must refuse too (all of
// its key, or all of its type), so that a saturated key never holds up
// the others.
func (c *claim) pick(limit int) ([]candidate, error) {
	p := &picker{c: c, limit: limit, taken: map[int64]bool{}, takenIn: map[group]int{}, seen: map[int64]bool{}, seenIn: map[group]int{},
		keys: map[string]*keyScan{}, blockKeys: map[group]bool{}, blockType: map[string]bool{}}
	types, all, err := c.exhausted()
	if err != nil || all {
		return nil, err // a limit of every type holds back every task
	}
	for _, t := range types {
		p.blockType[t] = true
	}
	more, err := p.window()
	if err != nil {
		return nil, err
	}
	if more && !p.full() {
		if err := p.visit(); err != nil {
			return nil, err
		}
	}
	if err := p.rounds(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(p.picks, func(a, b candidate) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return usual(a, b)
	})
	return p.picks, nil
}

// scanCandidate reads a candidate from rows of rowid, id, type, key,
// priority and visible_at.
func scanCandidate(rows *sql.Rows) (candidate, error) {
	var cd candidate
	err := rows.Scan(&cd.rowid, &cd.id, &cd.typ, &cd.key, &cd.priority, &cd.visible)
	return cd, err
}

// window reads the first pending tasks in the usual order, and offers
// each key's first one and every task of no key. It reports whether
// there may be pending tasks beyond it.
func (p *picker) window() (more bool, err error) {
	size := windowSize(p.limit)
	rows, err := p.c.tx.st.pendingWindow.Query(size)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	n := 0
	for !p.full() && rows.Next() {
		n++
		cd, err := scanCandidate(rows)
		if err != nil {
			return false, err
		}
		p.seen[cd.rowid] = true
		p.seenIn[group{cd.key, cd.typ}]++
		if err := p.offer(cd); err != nil {
			return false, err
		}
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	return n == size, rows.Close()
}

// offer tries cd as its key's first task of the claim, or as a task of no
// key: it takes it if every limit admits it. A later task of a key that
// took its first is left to the next rounds.
func (p *picker) offer(cd candidate) error { return p.offerHead(cd, true) }

// offerHead is offer; with head set, a task that is not the head of its
// ordered key makes it offer the head instead (once: two ordered limits
// of different types may name each other's head).
func (p *picker) offerHead(cd candidate, head bool) error {
	g := group{cd.key, cd.typ}
	if p.taken[cd.rowid] || p.blockType[cd.typ] || p.blockKeys[g] {
		return nil
	}
	var ks *keyScan
	if p.c.ls.keyed(cd.typ, cd.key) {
		ks = p.key(cd.key)
		if ks.blocked {
			return nil
		}
		if ks.first {
			ks.addGroup(g)
			return nil
		}
	}
	why, err := p.c.admit(cd.rowid, cd.typ, cd.key)
	if err != nil {
		return err
	}
	if why == blockedRow {
		// An ordered key whose head is another pending task, which may
		// be far behind in the usual order (a lower priority): try it.
		want := p.c.wantHead
		if !head || want == 0 || p.taken[want] || want == cd.rowid {
			return nil
		}
		var hd candidate
		err := p.c.tx.st.pendingRow.QueryRow(want).Scan(&hd.rowid, &hd.id, &hd.typ, &hd.key, &hd.priority, &hd.visible)
		if err == sql.ErrNoRows {
			return nil
		}
		if err != nil {
			return err
		}
		return p.offerHead(hd, false)
	}
	if why != admitted {
		p.refused(cd, why, ks)
		if why == blockedAll && p.c.blocksEveryType(cd.typ) {
			p.none = true // nothing at all can be claimed
		}
		return nil
	}
	p.takeRank(cd, 1)
	if ks != nil {
		ks.first = true
		ks.addGroup(g)
	}
	return nil
}

func (p *picker) takeRank(cd candidate, rank int) {
	p.c.take(cd.typ, cd.key)
	cd.rank = rank
	p.picks = append(p.picks, cd)
	p.taken[cd.rowid] = true
	p.takenIn[group{cd.key, cd.typ}]++
}

func (p *picker) refused(cd candidate, why blocked, ks *keyScan) {
	switch why {
	case blockedKey:
		if ks != nil && !p.c.ls.typed {
			ks.blocked = true
		}
		p.blockKeys[group{cd.key, cd.typ}] = true
	case blockedAll:
		p.blockType[cd.typ] = true
	}
}

// visit reads the groups of pending tasks in the groups index's order,
// from the one after where the previous claim stopped, wrapping around,
// until the claim has its tasks or every group was seen. Of a group of
// keyed tasks it offers the head (the others are for the next rounds); of
// a group of tasks of no key, as many as the claim has room for. The next
// claim starts after the last group this one looked at.
func (p *picker) visit() error {
	s := p.c.s
	s.cursorMu.Lock()
	start := s.cursor
	s.cursorMu.Unlock()
	last, moved := start, false
	chunk := p.limit - len(p.picks) + 8
	pass := func(from group, inclusive bool, upTo *group) error {
		for !p.full() {
			stmt := p.c.tx.st.groupsAfter
			if inclusive {
				stmt = p.c.tx.st.groupsFrom
			}
			heads, err := p.read(stmt, from.key, from.typ, chunk)
			if err != nil {
				return err
			}
			for _, h := range heads {
				g := group{h.key, h.typ}
				if p.full() || upTo != nil && g.compare(*upTo) > 0 {
					return nil
				}
				last, moved = g, true
				if err := p.group(h); err != nil {
					return err
				}
			}
			if len(heads) < chunk {
				return nil // the end of the index
			}
			from, inclusive = group{heads[len(heads)-1].key, heads[len(heads)-1].typ}, false
			chunk *= 2
		}
		return nil
	}
	err := pass(start, false, nil)
	if err == nil && start != (group{}) && !p.full() {
		err = pass(group{}, true, &start)
	}
	if moved {
		s.cursorMu.Lock()
		s.cursor = last
		s.cursorMu.Unlock()
	}
	return err
}

// read runs a query whose rows are candidates and returns them.
func (p *picker) read(stmt *sql.Stmt, args ...any) ([]candidate, error) {
	rows, err := stmt.Query(args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cds []candidate
	for rows.Next() {
		cd, err := scanCandidate(rows)
		if err != nil {
			return nil, err
		}
		cds = append(cds, cd)
	}
	return cds, rows.Err()
}

// group offers what the claim may take of the group whose head is h.
func (p *picker) group(h candidate) error {
	g := group{h.key, h.typ}
	if p.c.ls.keyed(h.typ, h.key) {
		if p.seen[h.rowid] { // the window offered it
			if ks := p.keys[h.key]; ks != nil && ks.first {
				ks.addGroup(g)
			}
			return nil
		}
		return p.offer(h)
	}
	// Tasks no PerKey limit covers: in the usual order, as many as the
	// claim has room for, besides those the window read.
	if p.blockType[g.typ] || p.blockKeys[g] {
		return nil
	}
	tasks, err := p.read(p.c.tx.st.groupTasks, g.key, g.typ, p.limit-len(p.picks)+p.seenIn[g])
	if err != nil {
		return err
	}
	for _, cd := range tasks {
		if p.full() || p.blockType[g.typ] || p.blockKeys[g] {
			break
		}
		if !p.seen[cd.rowid] {
			if err := p.offer(cd); err != nil {
				return err
			}
		}
	}
	return nil
}

// rounds takes the later tasks of the keys that took their first: the
// second task of every such key before the third of any, and so on, each
// round in the usual order. It reads the next tasks only of the keys'
// groups that every limit has room for one more of.
func (p *picker) rounds() error {
	if p.full() {
		return nil
	}
	queues := map[string][]candidate{}
	for _, k := range p.keyOrder {
		ks := p.keys[k]
		if !ks.first || ks.blocked {
			continue
		}
		var q []candidate
		for _, g := range ks.groups {
			if p.blockKeys[g] || p.blockType[g.typ] {
				continue
			}
			why, err := p.c.admit(0, g.typ, g.key) // a task of the group, not the head of an ordered key
			if err != nil {
				return err
			}
			if why != admitted {
				continue
			}
			tasks, err := p.read(p.c.tx.st.groupTasks, g.key, g.typ, p.limit-len(p.picks)+p.takenIn[g])
			if err != nil {
				return err
			}
			for _, cd := range tasks {
				if !p.taken[cd.rowid] {
					q = append(q, cd)
				}
			}
		}
		slices.SortFunc(q, usual)
		queues[k] = q[:min(len(q), p.limit-len(p.picks))]
	}
	for round := 0; !p.full(); round++ {
		var next []candidate
		for _, k := range p.keyOrder {
			if q := queues[k]; !p.keys[k].blocked && round < len(q) {
				next = append(next, q[round])
			}
		}
		if len(next) == 0 {
			break
		}
		slices.SortFunc(next, usual)
		for _, cd := range next {
			if p.full() {
				break
			}
			if p.blockType[cd.typ] || p.blockKeys[group{cd.key, cd.typ}] {
				continue
			}
			why, err := p.c.admit(cd.rowid, cd.typ, cd.key)
			if err != nil {
				return err
			}
			if why != admitted {
				p.refused(cd, why, p.keys[cd.key])
				continue
			}
			p.takeRank(cd, round+2)
		}
	}
	return nil
}

// blocksEveryType reports whether the limit that refused a task of typ
// for every task of its type refuses every task: it is a limit of all
// types that is not per key.
func (c *claim) blocksEveryType(typ string) bool {
	for i, l := range c.ls.limits {
		if l.PerKey || l.Type != "" {
			continue
		}
		if l.Concurrency > 0 && c.use[i] >= l.Concurrency {
			return true
		}
		if l.Rate > 0 {
			if b := c.buckets[bucketKey(l, "")]; b != nil && b.tokens < 1 {
				return true
			}
		}
	}
	return false
}

// exhausted returns the types whose every task a limit that is not
// PerKey holds back before the claim starts (its running tasks fill its
// concurrency, or its bucket is empty), and whether such a limit of every
// type holds back every task.
func (c *claim) exhausted() (types []string, all bool, err error) {
	for i, l := range c.ls.limits {
		if l.PerKey {
			continue
		}
		full := l.Concurrency > 0 && c.use[i] >= l.Concurrency
		if !full && l.Rate > 0 {
			b, err := c.bucket(l, "")
			if err != nil {
				return nil, false, fmt.Errorf("read the token bucket of limit %s: %w", l.Name, err)
			}
			if b.tokens < 1 {
				full = true
				c.rateDue(l, b)
			}
		}
		switch {
		case !full:
		case l.Type == "":
			return nil, true, nil
		default:
			types = append(types, l.Type)
		}
	}
	return types, false, nil
}

// rateDue notes when bucket b of limit l has its next token.
func (c *claim) rateDue(l peonify.Limit, b *bucket) {
	due := c.now + int64(math.Ceil((1-b.tokens)*float64(l.Period)/float64(l.Rate)))
	if c.rateAt == 0 || due < c.rateAt {
		c.rateAt = due
	}
}

// save writes back the buckets the claim took tokens from.
func (c *claim) save() error {
	for id, b := range c.buckets {
		if !b.dirty {
			continue
		}
		if _, err := c.tx.exec(c.tx.st.bucketPut, id[0], id[1], b.tokens, b.at); err != nil {
			return fmt.Errorf("store the token bucket of limit %s: %w", id[0], err)
		}
	}
	return nil
}

// pollLimited is Poll with limits: one transaction that promotes due tasks,
// picks the tasks the limits admit, claims them and updates the buckets.
func (s *Stream) pollLimited(ctx context.Context, ls *limitSet, limit int) ([]peonify.Delivery, error) {
	var (
		ds     []peonify.Delivery
		next   time.Time
		rateAt int64
	)
	err := s.w.do(ctx, func(tx *wtx) error {
		ds, next, rateAt = ds[:0], time.Time{}, 0
		now := tx.now.UnixNano()
		if _, err := tx.exec(tx.st.promote, now); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if _, err := tx.exec(tx.st.rescue, now); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if err := s.sweepBuckets(tx, ls); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if !s.groupsReady.Load() {
			if _, err := tx.execSQL(groupsIndex); err != nil {
				return fmt.Errorf("poll: create the index of pending tasks by key and type: %w", err)
			}
		}
		c := &claim{s: s, tx: tx, ls: ls, now: now}
		if err := c.load(); err != nil {
			return fmt.Errorf("poll: count the tasks the limits hold: %w", err)
		}
		picks, err := c.pick(limit)
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		rateAt = c.rateAt
		if len(picks) > 0 {
			if ds, err = s.claimRows(tx, picks); err != nil {
				return fmt.Errorf("poll: %w", err)
			}
			if err := c.save(); err != nil {
				return fmt.Errorf("poll: %w", err)
			}
		}
		if len(ds) == limit {
			return nil
		}
		if next, err = tx.earliestDue(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.groupsReady.Store(true)
	s.lastFull.Store(len(ds) == limit)
	if !next.IsZero() {
		s.wakeAt(next)
	}
	if rateAt != 0 {
		s.wakeAt(time.Unix(0, rateAt))
	}
	return ds, nil
}

// sweepEvery is how often a Stream deletes the buckets that have filled up.
const sweepEvery = time.Minute

// sweepBuckets deletes, at most once per sweepEvery, the buckets of rate
// limits that have had the time to fill up since their last token was
// taken. A bucket not in the file is full, so this changes no limit; it
// keeps a PerKey rate limit from keeping a row for every key it ever saw.
func (s *Stream) sweepBuckets(tx *wtx, ls *limitSet) error {
	now := tx.now.UnixNano()
	if last := s.sweptAt.Load(); last != 0 && now-last < int64(sweepEvery) && now >= last {
		return nil
	}
	s.sweptAt.Store(now)
	for _, l := range ls.limits {
		if l.Rate == 0 {
			continue
		}
		fill := int64(math.Ceil(float64(l.Burst) * float64(l.Period) / float64(l.Rate)))
		if _, err := tx.execSQL(`DELETE FROM peonify_limit_buckets WHERE name = ?1 AND at < ?2`, l.Name, now-fill); err != nil {
			return fmt.Errorf("delete the full buckets of limit %s: %w", l.Name, err)
		}
	}
	return nil
}

// claimRows leases the picked tasks in one statement and returns their
// deliveries in the order they were picked.
func (s *Stream) claimRows(tx *wtx, picks []candidate) ([]peonify.Delivery, error) {
	order := make(map[string]int, len(picks))
	var ids strings.Builder
	ids.WriteByte('[')
	for i, p := range picks {
		if i > 0 {
			ids.WriteByte(',')
		}
		fmt.Fprint(&ids, p.rowid)
		order[p.id] = i
	}
	ids.WriteByte(']')
	now := tx.now.UnixNano()
	rows, err := tx.st.claimPicked.Query(now, tx.now.Add(s.cfg.Lease).UnixNano(), ids.String(), s.instance)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ds := make([]peonify.Delivery, len(picks))
	n := 0
	for rows.Next() {
		info, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		i, ok := order[info.Task.ID]
		if !ok {
			return nil, fmt.Errorf("claimed task %s that was not picked", info.Task.ID)
		}
		ds[i] = peonify.Delivery{Task: &info.Task, Token: info.token, Deadline: info.LeaseUntil}
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if n != len(picks) {
		return nil, fmt.Errorf("claimed %d of the %d tasks picked", n, len(picks))
	}
	return ds, nil
}

// LimitStats reports, for each limit in the order SetLimits was given
// them, the running tasks it counts (InUse), the ready tasks it applies to
// that have not started (Waiting) and, for a PerKey limit, its busiest
// keys. It reads the file beside the writer, as the Inspector does, so it
// sees every process's tasks. With no limits it returns nil.
func (s *Stream) LimitStats(ctx context.Context) ([]peonify.LimitStat, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	ls := s.limits.Load()
	if ls == nil {
		return nil, nil
	}
	now := s.now().UnixNano()
	stats := make([]peonify.LimitStat, 0, len(ls.limits))
	for _, l := range ls.limits {
		st := peonify.LimitStat{Name: l.Name}
		var by int64
		if l.Local {
			by = s.instance
		}
		// A due scheduled task and a running task whose lease ended are
		// ready, as the Inspector reports them.
		rows, err := s.db.QueryContext(ctx, `SELECT key,
				count(*) FILTER (WHERE state = 'running' AND visible_at > ?1 AND (?4 = 0 OR claimed_by = ?4)),
				count(*) FILTER (WHERE state = 'pending' OR visible_at <= ?1)
			FROM peonify_tasks
			WHERE state IN ('pending', 'scheduled', 'running') AND (?2 = '' OR type = ?2) AND (?3 = 0 OR key <> '')
			GROUP BY CASE WHEN ?3 THEN key ELSE '' END`,
			now, l.Type, l.PerKey, by)
		if err != nil {
			return nil, fmt.Errorf("sqlitestream: stats of limit %s: %w", l.Name, err)
		}
		for rows.Next() {
			var k peonify.KeyStat
			if err := rows.Scan(&k.Key, &k.InUse, &k.Waiting); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlitestream: stats of limit %s: %w", l.Name, err)
			}
			st.InUse += k.InUse
			st.Waiting += k.Waiting
			if l.PerKey && k.InUse+k.Waiting > 0 {
				st.Keys = append(st.Keys, k)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("sqlitestream: stats of limit %s: %w", l.Name, err)
		}
		slices.SortFunc(st.Keys, func(a, b peonify.KeyStat) int {
			if d := (b.InUse + b.Waiting) - (a.InUse + a.Waiting); d != 0 {
				return d
			}
			return strings.Compare(a.Key, b.Key)
		})
		if len(st.Keys) > peonify.MaxLimitStatKeys {
			st.Keys = st.Keys[:peonify.MaxLimitStatKeys]
		}
		stats = append(stats, st)
	}
	return stats, nil
}
