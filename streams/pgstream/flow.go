package pgstream

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peonify/peonify"
)

var _ peonify.Limiter = (*Stream)(nil)

// flowLockClass is the first key of the advisory lock that serializes the
// limited claims of one queue (the second is a hash of schema and queue).
const flowLockClass = 1885693530

// SetLimits replaces the limits that the stream's claims enforce (see
// peonify.Limit and the package documentation, "Flow control"). It checks
// them with peonify.NormalizeLimits and does no I/O. With no limits, Poll
// claims exactly as it does without SetLimits.
func (s *Stream) SetLimits(limits []peonify.Limit) error {
	ls, err := peonify.NormalizeLimits(limits)
	if err != nil {
		return err
	}
	for _, l := range ls {
		if err := storableLimit(l); err != nil {
			return err
		}
	}
	if len(ls) == 0 {
		s.plan.Store(nil)
		return nil
	}
	s.plan.Store(newFlowPlan(s.cfg.Schema, ls))
	return nil
}

// storableLimit rejects names a Postgres text value cannot hold: a task
// with such a type or key cannot be stored, so the limit would be a
// mistake.
func storableLimit(l peonify.Limit) error {
	ok := func(v string) bool { return utf8.ValidString(v) && !strings.ContainsRune(v, 0) }
	bad := ""
	switch {
	case !ok(l.Name):
		bad = "Name"
	case !ok(l.Type):
		bad = "Type"
	}
	for k := range l.KeyConcurrency {
		if !ok(k) {
			bad = "a KeyConcurrency key"
		}
	}
	if bad != "" {
		return &peonify.ConfigError{Field: "Limit " + strconv.Quote(l.Name),
			Reason: bad + " is not valid UTF-8 or holds a NUL byte, which no Postgres task can have"}
	}
	return nil
}

// flowPlan is a set of limits with the SQL that enforces them.
type flowPlan struct {
	limits []peonify.Limit
	conc   []bool          // limit i bounds concurrency (Concurrency, KeyConcurrency or Ordered)
	period []time.Duration // limit i's token interval (Period/Rate), 0 without Rate
	perKey bool            // some limit is PerKey: keyed tasks are claimed round-robin by key
	deep   bool            // a key may start more than one task per claim

	// Statements that read a limited claim's candidates. Parameters: $1
	// queue, $2 most candidates, $3 Config.Identity, $4 the key after which
	// the rotation over keys starts, $5 the limits (by index) that this
	// claim has used up already, $6 the IDs it has taken already, $7 the
	// keys keyedHinted looks at.
	unkeyed, keyed, keyedHinted, keyedDeep string
	fast                                   bool   // hinted claims take every candidate: see fastClaim
	fastClaim                              string // a hinted claim in one statement; $9 the lease in µs
	rateDue                                string // $1 queue: seconds until the next token of an empty bucket, or NULL
	claim                                  string // $1 queue, $2 ids, $3 lease µs, $4 identity
	buckets                                string // $1 queue, $2 names, $3 keys, $4 empty_at
	cleanBuckets                           string // $1 queue: deletes buckets that are full again
	stats                                  []string
}

// flowSQL builds statements of one schema.
type flowSQL struct {
	t, b, q, seq string

	// unkeyed builds a statement that reads only tasks without a key, to
	// which no PerKey limit applies; hinted, one that reads only the keys
	// in $7; tid, one whose rows start with the candidate's ctid (named
	// tid), for a claim that updates the rows it read in one statement.
	unkeyed, hinted, tid bool
}

// lit quotes s as an SQL string literal. SetLimits has checked that s is
// valid UTF-8 without NUL; pgx requires standard_conforming_strings.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func newFlowPlan(schema string, ls []peonify.Limit) *flowPlan {
	s := pgx.Identifier{schema}.Sanitize()
	f := flowSQL{t: s + ".peonify_tasks", b: s + ".peonify_buckets", q: s + ".peonify_queues", seq: s + ".peonify_token_seq"}
	p := &flowPlan{limits: ls, conc: make([]bool, len(ls)), period: make([]time.Duration, len(ls))}
	allDepth1 := false // an every-type PerKey limit lets each key start one task at a time
	for i, l := range ls {
		p.conc[i] = l.Concurrency > 0 || len(l.KeyConcurrency) > 0
		if l.Rate > 0 {
			p.period[i] = l.Period / time.Duration(l.Rate)
		}
		if l.PerKey {
			p.perKey = true
			if l.Type == "" && (l.Ordered || (l.Concurrency == 1 && maxKeyConcurrency(l) <= 1)) {
				allDepth1 = true
			}
		}
	}
	p.deep = !allDepth1
	if p.perKey {
		p.keyed = f.keyed(p, false, false)
		if p.deep {
			p.keyedDeep = f.keyed(p, false, true)
		}
		h := f
		h.hinted = true
		p.keyedHinted = h.keyed(p, true, false)
		f.unkeyed = true
	}
	p.unkeyed = f.unkeyedTasks(p)
	p.rateDue = f.rateDue(p)
	// A plan of PerKey concurrency, Ordered and Fair limits only admits
	// every candidate of a hinted read: one task per key, of a key with
	// room under every limit that applies to it. Its hinted claims need no
	// admission here, and take one statement.
	p.fast = p.perKey
	for i, l := range ls {
		if !l.PerKey || p.period[i] > 0 {
			p.fast = false
		}
	}
	if p.fast {
		// The rows are updated by the ctid the same statement read them
		// at (a TID scan: no second walk of the primary key per task). A
		// row updated meanwhile by another claim has moved on, and the
		// TID scan's recheck of the new version finds another ctid and
		// skips it; token 0 and the state check it as the claim does.
		tf := f
		tf.tid = true
		th := tf
		th.hinted, th.unkeyed = true, false
		p.fastClaim = `
WITH c AS (
	SELECT x.tid FROM (
		(` + tf.unkeyedTasks(p) + `)
		UNION ALL
		(` + th.keyed(p, true, false) + `)
	) AS x(tid, id, type, key, priority, seq, rank)
	ORDER BY x.rank, x.priority DESC, x.seq
	LIMIT $2::int
)
UPDATE ` + f.t + ` t
SET state = 'running', attempts = t.attempts + 1, token = (SELECT nextval('` + f.seq + `')),
    lease_until = now() + $9::bigint * interval '1 microsecond', updated_at = now(), claimed_by = $3
WHERE t.ctid = ANY(ARRAY(SELECT c.tid FROM c)) AND t.queue = $1 AND t.token = 0 AND t.state NOT IN ('dead', 'done', 'waiting', 'cancelled')
RETURNING ` + taskColumns
	}
	// The candidates were pending when read, under the lock; token 0 and
	// neither dead, done, waiting nor cancelled check that they still are (a claim without
	// limits may have taken one meanwhile). state = 'pending' would invite
	// the planner to read the queue's pending index instead of the primary
	// key, and so would a join, or an array whose size it knows, on a
	// table whose statistics are not up to date yet: the ids come as an
	// array of a size it cannot see.
	p.claim = `
UPDATE ` + f.t + ` t
SET state = 'running', attempts = t.attempts + 1, token = (SELECT nextval('` + f.seq + `')),
    lease_until = now() + $3::bigint * interval '1 microsecond', updated_at = now(), claimed_by = $4
WHERE t.id = ANY(ARRAY(SELECT unnest($2::text[]))) AND t.queue = $1 AND t.token = 0 AND t.state NOT IN ('dead', 'done', 'waiting', 'cancelled')
RETURNING ` + taskColumns
	p.buckets = `
INSERT INTO ` + f.b + ` AS b (queue, name, key, empty_at)
SELECT $1, u.name, u.key, u.empty_at FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(name, key, empty_at)
ON CONFLICT (queue, name, key) DO UPDATE SET empty_at = excluded.empty_at`
	for i := range ls {
		p.stats = append(p.stats, f.stats(p, i))
	}
	// A bucket whose empty_at is Burst intervals past is full, as a missing
	// row is.
	var span time.Duration
	for i, l := range ls {
		span = max(span, time.Duration(l.Burst)*p.period[i])
	}
	if span > 0 {
		p.cleanBuckets = `DELETE FROM ` + f.b + ` b WHERE b.queue = $1 AND b.empty_at < now() - ` + interval(span+time.Second)
	}
	return p
}

func maxKeyConcurrency(l peonify.Limit) int {
	m := 0
	for _, n := range l.KeyConcurrency {
		m = max(m, n)
	}
	return m
}

// applies is the SQL condition that limit l applies to the task row a.
func applies(l peonify.Limit, a string) string {
	var c []string
	if l.Type != "" {
		c = append(c, a+".type = "+lit(l.Type))
	}
	if l.PerKey {
		c = append(c, a+".key <> ''")
	}
	if len(c) == 0 {
		return "true"
	}
	return "(" + strings.Join(c, " AND ") + ")"
}

// usage is the CTE u<i> holding limit i's running tasks: n, a count, or
// for a PerKey limit m, a JSON object of counts by key.
func (f flowSQL) usage(p *flowPlan, i int) string {
	l := p.limits[i]
	where := "r.queue = $1 AND r.state = 'running' AND " + applies(l, "r")
	if l.Local {
		where += " AND r.claimed_by = $3"
	}
	if l.PerKey && f.hinted {
		where += " AND r.key IN (SELECT unnest($7::text[]))" // hashed: not a scan of $7 per row
	}
	if l.PerKey {
		return fmt.Sprintf(`u%d AS (SELECT coalesce(jsonb_object_agg(x.key, x.n), '{}'::jsonb) AS m
	FROM (SELECT r.key, count(*) AS n FROM %s r WHERE %s GROUP BY r.key) x)`, i, f.t, where)
	}
	return fmt.Sprintf(`u%d AS (SELECT count(*)::int AS n FROM %s r WHERE %s)`, i, f.t, where)
}

// used is limit i's running count for key k (an SQL expression).
func used(p *flowPlan, i int, k string) string {
	if p.limits[i].PerKey {
		return fmt.Sprintf("coalesce((u%d.m ->> %s)::int, 0)", i, k)
	}
	return fmt.Sprintf("u%d.n", i)
}

// capOf is limit i's concurrency for key k; NULL means unlimited.
func capOf(p *flowPlan, i int, k string) string {
	l := p.limits[i]
	c := "NULL::int"
	if l.Concurrency > 0 {
		c = strconv.Itoa(l.Concurrency)
	}
	if len(l.KeyConcurrency) == 0 {
		return c
	}
	j, _ := json.Marshal(l.KeyConcurrency)
	return fmt.Sprintf("coalesce((%s::jsonb ->> %s)::int, %s)", lit(string(j)), k, c)
}

// bucket is limit i's bucket row's empty_at for key k.
func (f flowSQL) bucket(p *flowPlan, i int, k string) string {
	if !p.limits[i].PerKey {
		k = "''"
	}
	return fmt.Sprintf("(SELECT b.empty_at FROM %s b WHERE b.queue = $1 AND b.name = %s AND b.key = %s)", f.b, lit(p.limits[i].Name), k)
}

// interval is d as an SQL interval.
func interval(d time.Duration) string {
	return fmt.Sprintf("(%d * interval '1 microsecond')", max(d.Microseconds(), 1))
}

// blocked is the SQL condition that a limit holds back the task row a now,
// whatever else the claim takes.
func (f flowSQL) blocked(p *flowPlan, a string) string {
	c := []string{a + ".id = ANY($6::text[])"}
	for i, l := range p.limits {
		if f.unkeyed && l.PerKey {
			continue // it applies to no task without a key
		}
		app := applies(l, a)
		if !l.PerKey {
			c = append(c, fmt.Sprintf("(%s AND %d = ANY($5::int[]))", app, i))
		}
		if p.conc[i] {
			c = append(c, fmt.Sprintf("(%s AND coalesce(%s >= %s, false))", app, used(p, i, a+".key"), capOf(p, i, a+".key")))
		}
		if p.period[i] > 0 {
			c = append(c, fmt.Sprintf("(%s AND coalesce(%s > now() - %s, false))", app, f.bucket(p, i, a+".key"), interval(p.period[i])))
		}
		if l.Ordered {
			typ := ""
			if l.Type != "" {
				typ = " AND e.type = " + lit(l.Type)
			}
			c = append(c, fmt.Sprintf(`(%s AND EXISTS (SELECT 1 FROM %s e
		WHERE e.queue = $1 AND e.key = %s.key AND e.key <> '' AND e.state = 'pending' AND e.seq < %s.seq%s))`, app, f.t, a, a, typ))
		}
	}
	return strings.Join(c, "\n\t  OR ")
}

// extras are the columns after a candidate's own: for each limit, its
// running count for the candidate's key (concurrency limits) and its
// bucket's empty_at (rate limits).
func (f flowSQL) extras(p *flowPlan, a string) string {
	var c []string
	for i, l := range p.limits {
		skip := f.unkeyed && l.PerKey
		if p.conc[i] && skip {
			c = append(c, "0")
		} else if p.conc[i] {
			c = append(c, used(p, i, a+".key"))
		}
		if p.period[i] > 0 && skip {
			c = append(c, "NULL::timestamptz")
		} else if p.period[i] > 0 {
			c = append(c, f.bucket(p, i, a+".key"))
		}
	}
	if len(c) == 0 {
		return ""
	}
	return ", " + strings.Join(c, ", ")
}

// with is the WITH clause of the usage CTEs, and the FROM items naming them.
func (f flowSQL) with(p *flowPlan) (with, from string) {
	var ctes, names []string
	for i, l := range p.limits {
		if p.conc[i] && !(f.unkeyed && l.PerKey) {
			ctes = append(ctes, f.usage(p, i))
			names = append(names, fmt.Sprintf("u%d", i))
		}
	}
	if len(ctes) == 0 {
		return "", ""
	}
	return strings.Join(ctes, ",\n"), " CROSS JOIN " + strings.Join(names, " CROSS JOIN ")
}

const candColumns = "c.id, c.type, c.key, c.priority, coalesce(c.seq, 0)"

// unkeyedTasks selects up to $2 ready tasks in claim order that no limit
// holds back: those without a key when some limit is PerKey (the keyed
// ones are taken by key), else all of them.
func (f flowSQL) unkeyedTasks(p *flowPlan) string {
	with, from := f.with(p)
	if with != "" {
		with = "WITH " + with + "\n"
	}
	scope, order := "", "c.priority DESC, c.run_at, c.id"
	if p.perKey {
		scope, order = " AND c.key = ''", "c.priority DESC, c.seq"
	}
	tid := ""
	if f.tid {
		tid = "c.ctid AS tid, "
	}
	return with + `SELECT ` + tid + candColumns + `, 1` + f.extras(p, "c") + `
FROM ` + f.t + ` c` + from + `
WHERE c.queue = $1 AND c.state = 'pending' AND c.run_at <= now()` + scope + `
  AND NOT EXISTS (SELECT 1 FROM ` + f.q + ` pq WHERE pq.queue = $1 AND pq.paused_at IS NOT NULL AND $3::text <> '' AND $4::text IS NOT NULL AND $5::int[] IS NOT NULL AND $7::text[] IS NOT NULL AND $8::int IS NOT NULL)
  AND NOT (` + f.blocked(p, "c") + `)
ORDER BY ` + order + `
LIMIT $2::int`
}

// keyed selects ready keyed tasks round-robin across keys, starting after
// the key $4 and wrapping around: the next task of each key (rank 1) that
// no limit holds back. Keys that an every-type PerKey limit saturates are
// skipped without reading their tasks, so a blocked key costs one index
// probe.
//
// With hinted, it looks only at the keys in $7, whose permits were given
// back since the last claim, and takes the next task of each. With deep,
// it reads the tasks after each key's next one (rank 2 on), which a claim
// that took the next task of every key and still has room asks for.
func (f flowSQL) keyed(p *flowPlan, hinted, deep bool) string {
	with, from := f.with(p)
	if with != "" {
		with += ",\n"
	}
	next := func(after string) string {
		return `(SELECT n.key FROM ` + f.t + ` n WHERE n.queue = $1 AND n.state = 'pending' AND n.key > ` + after + ` ORDER BY n.key LIMIT 1)`
	}
	// free is how many more tasks the key may start under the every-type
	// PerKey concurrency limits, NULL when they do not bound it.
	var keyOK, frees []string
	ordered := false
	for i, l := range p.limits {
		if !l.PerKey || l.Type != "" {
			continue
		}
		if p.conc[i] {
			keyOK = append(keyOK, fmt.Sprintf("coalesce(%s < %s, true)", used(p, i, "k.key"), capOf(p, i, "k.key")))
			frees = append(frees, fmt.Sprintf("%s - %s", capOf(p, i, "k.key"), used(p, i, "k.key")))
		}
		if p.period[i] > 0 {
			keyOK = append(keyOK, fmt.Sprintf("coalesce(%s <= now() - %s, true)", f.bucket(p, i, "k.key"), interval(p.period[i])))
		}
		ordered = ordered || l.Ordered
	}
	cond := ""
	if len(keyOK) > 0 {
		cond = " AND " + strings.Join(keyOK, " AND ")
	}
	order := "t.priority DESC, t.seq"
	if ordered {
		order = "t.seq" // the key's first task is the only one that may start
	}
	// Beyond a key's first task, a typed PerKey concurrency limit is
	// taken to have given that first task a permit: a later task of the
	// key is a candidate only if the limit has room for one more.
	var second []string
	for i, l := range p.limits {
		if l.PerKey && l.Type != "" && p.conc[i] {
			second = append(second, fmt.Sprintf("(%s AND coalesce(%s + 1 >= %s, false))", applies(l, "t"), used(p, i, "t.key"), capOf(p, i, "t.key")))
		}
	}
	tid, outTid := "", ""
	if f.tid {
		tid, outTid = "t.ctid AS tid, ", "c.tid, "
	}
	task := func(first int, limit string) string {
		filter := f.blocked(p, "t")
		if first > 1 && len(second) > 0 {
			filter += "\n\t  OR " + strings.Join(second, "\n\t  OR ")
		}
		return `SELECT x.*, ` + strconv.Itoa(first-1) + ` + row_number() OVER () AS rank FROM (
			SELECT ` + tid + `t.id, t.type, t.key, t.priority, t.seq FROM ` + f.t + ` t
			WHERE t.queue = $1 AND t.key = k.key AND t.key <> '' AND t.state = 'pending' AND t.run_at <= now()
			  AND NOT (` + filter + `)
			ORDER BY ` + order + ` ` + limit + `
		) x`
	}
	if hinted {
		return `WITH ` + with + `ks AS (
	SELECT DISTINCT h.key FROM unnest($7::text[]) AS h(key) WHERE h.key <> '' AND $4::text IS NOT NULL
)
SELECT ` + outTid + candColumns + `, c.rank` + f.extras(p, "c") + ` FROM (
	SELECT t.* FROM ks k` + from + ` CROSS JOIN LATERAL (
		` + task(1, "LIMIT 1") + `
	) t
	WHERE true` + cond + `
) c` + from + `
WHERE NOT EXISTS (SELECT 1 FROM ` + f.q + ` pq WHERE pq.queue = $1 AND pq.paused_at IS NOT NULL AND $3::text <> '' AND $5::int[] IS NOT NULL AND $8::int IS NOT NULL)
LIMIT $2::int`
	}
	q := `WITH RECURSIVE ` + with + `k1(key) AS (
	` + next("$4") + `
	UNION ALL
	SELECT ` + next("k1.key") + ` FROM k1 WHERE k1.key IS NOT NULL
), k2(key) AS (
	` + next("''") + `
	UNION ALL
	SELECT ` + next("k2.key") + ` FROM k2 WHERE k2.key IS NOT NULL AND k2.key < $4
), ks AS (
	SELECT key FROM k1 WHERE key IS NOT NULL
	UNION ALL
	SELECT key FROM k2 WHERE key IS NOT NULL AND key <= $4
)
SELECT ` + outTid + candColumns + `, c.rank` + f.extras(p, "c") + ` FROM (
	SELECT t.* FROM ks k` + from + ` CROSS JOIN LATERAL (
		` + task(1, "LIMIT 1") + `
	) t
	WHERE true` + cond
	if deep {
		// The tasks taken already are left out ($6), so the first task
		// read is the key's second, or its first when the claim did not
		// take that one.
		depth := "$8::int"
		if len(frees) > 0 {
			depth = "least($8::int, " + strings.Join(frees, ", ") + ")"
		}
		q = strings.Replace(q, task(1, "LIMIT 1"), task(2, "LIMIT coalesce("+depth+", $8::int)"), 1)
	}
	byRank := ""
	if deep {
		byRank = "\nORDER BY c.rank" // every key's second task before any key's third
	}
	q += `
) c` + from + `
WHERE NOT EXISTS (SELECT 1 FROM ` + f.q + ` pq WHERE pq.queue = $1 AND pq.paused_at IS NOT NULL AND $3::text <> '' AND $5::int[] IS NOT NULL AND $7::text[] IS NOT NULL AND $8::int IS NOT NULL)` + byRank + `
LIMIT $2::int`
	return q
}

// rateDue returns how many seconds until the next token of a bucket that
// holds back tasks is due, or NULL.
func (f flowSQL) rateDue(p *flowPlan) string {
	var parts []string
	for i, l := range p.limits {
		if p.period[i] == 0 {
			continue
		}
		iv := interval(p.period[i])
		parts = append(parts, fmt.Sprintf(`(SELECT min(b.empty_at) + %s FROM %s b WHERE b.queue = $1 AND b.name = %s AND b.empty_at > now() - %s)`,
			iv, f.b, lit(l.Name), iv))
	}
	if len(parts) == 0 {
		return ""
	}
	return `SELECT extract(epoch FROM least(` + strings.Join(parts, ", ") + `) - now())::float8`
}

// stats returns limit i's tasks by key (one row, key ”, unless PerKey):
// running, ready, and totals over every key, busiest keys first.
func (f flowSQL) stats(p *flowPlan, i int) string {
	l := p.limits[i]
	running := "t.state = 'running'"
	if l.Local {
		running += " AND t.claimed_by = $2"
	} else {
		running += " AND $2::text IS NOT NULL"
	}
	key := "''"
	if l.PerKey {
		key = "t.key"
	}
	return `SELECT x.key, x.r, x.w, sum(x.r) OVER ()::bigint, sum(x.w) OVER ()::bigint FROM (
	SELECT ` + key + ` AS key, count(*) FILTER (WHERE ` + running + `) AS r,
	       count(*) FILTER (WHERE t.state = 'pending' AND t.run_at <= now()) AS w
	FROM ` + f.t + ` t
	WHERE t.queue = $1 AND t.state IN ('pending', 'running') AND ` + applies(l, "t") + `
	GROUP BY 1
) x
WHERE x.r + x.w > 0
ORDER BY x.r + x.w DESC, x.key
LIMIT ` + strconv.Itoa(peonify.MaxLimitStatKeys)
}

// candidate is a ready task that the limited claim may take.
type candidate struct {
	id, typ, key string
	priority     int
	seq          int64
	rank         int
	keyed        bool                 // from the rotation over keys
	pos          int                  // order of arrival from the database
	used         []int                // per limit: running count for the key (concurrency limits)
	empty        []pgtype.Timestamptz // per limit: the bucket's empty_at (rate limits)
}

// scanCandidates reads the rows of unkeyed or keyed.
func scanCandidates(rows pgx.Rows, p *flowPlan, out []candidate, pos *int, keyed bool) ([]candidate, error) {
	defer rows.Close()
	for rows.Next() {
		*pos++
		c := candidate{pos: *pos, keyed: keyed, used: make([]int, len(p.limits)), empty: make([]pgtype.Timestamptz, len(p.limits))}
		var rank int64
		dest := []any{&c.id, &c.typ, &c.key, &c.priority, &c.seq, &rank}
		for i := range p.limits {
			if p.conc[i] {
				dest = append(dest, &c.used[i])
			}
			if p.period[i] > 0 {
				dest = append(dest, &c.empty[i])
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return out, err
		}
		c.rank = int(rank)
		out = append(out, c)
	}
	return out, rows.Err()
}

// bucketID names a token bucket: a limit, and a key for PerKey limits.
type bucketID struct {
	limit int
	key   string
}

// admission picks, from the candidates of one claim, the tasks that every
// limit admits, counting each task it takes against its limits.
type admission struct {
	p       *flowPlan
	n       int // the most tasks the claim takes
	now     time.Time
	taken   map[bucketID]int       // tasks taken per limit (and key)
	buckets map[bucketID]time.Time // buckets taken from, with their new empty_at
	ids     []string               // the tasks taken, in order
	taking  map[string]bool        // the tasks taken
	out     []candidate
	full    []int32 // limits without PerKey that held back a task: used up
	lastKey string  // the key of the last keyed task taken in the rotation
	lastPos int
}

func newAdmission(p *flowPlan, n int, now time.Time) *admission {
	return &admission{p: p, n: n, now: now, taken: make(map[bucketID]int), buckets: make(map[bucketID]time.Time),
		ids: []string{}, taking: make(map[string]bool), full: []int32{}, lastPos: -1}
}

// add admits candidates, up to the claim's n tasks: in rank order (a
// key's next task before any key's second), then by priority and
// arrival. It reports whether a limit without PerKey was used up by this
// call, so that a claim that is not full yet may look further.
func (a *admission) add(cands []candidate) (usedUp bool) {
	p := a.p
	slices.SortStableFunc(cands, func(x, y candidate) int {
		switch {
		case x.rank != y.rank:
			return x.rank - y.rank
		case x.priority != y.priority:
			return y.priority - x.priority
		case x.seq != y.seq && x.seq != 0 && y.seq != 0:
			if x.seq < y.seq {
				return -1
			}
			return 1
		}
		return x.pos - y.pos
	})
	for _, c := range cands {
		if len(a.out) == a.n {
			break
		}
		if a.taking[c.id] {
			continue
		}
		t := peonify.Task{Type: c.typ, Key: c.key}
		held := -1
		var spend []bucketID
		var spendAt []time.Time
		for i, l := range p.limits {
			if !l.Applies(&t) {
				continue
			}
			id := bucketID{i, ""}
			if l.PerKey {
				id.key = c.key
			}
			if p.conc[i] {
				if limit, bounded := l.ConcurrencyFor(c.key); bounded && c.used[i]+a.taken[id] >= limit {
					held = i
					break
				}
			}
			if p.period[i] > 0 {
				e, ok := a.buckets[id]
				if !ok && c.empty[i].Valid {
					e = c.empty[i].Time
				}
				T := p.period[i]
				if floor := a.now.Add(-time.Duration(l.Burst) * T); e.Before(floor) {
					e = floor // a bucket holds at most Burst tokens
				}
				if e.Add(T).After(a.now) {
					held = i
					break
				}
				spend = append(spend, id)
				spendAt = append(spendAt, e.Add(T))
			}
		}
		if held >= 0 {
			if !p.limits[held].PerKey && !slices.Contains(a.full, int32(held)) {
				a.full = append(a.full, int32(held))
				usedUp = true
			}
			continue
		}
		a.ids = append(a.ids, c.id)
		a.taking[c.id] = true
		a.out = append(a.out, c)
		if c.keyed && c.pos > a.lastPos {
			a.lastKey, a.lastPos = c.key, c.pos
		}
		for i, l := range p.limits {
			if p.conc[i] && l.Applies(&t) {
				id := bucketID{i, ""}
				if l.PerKey {
					id.key = c.key
				}
				a.taken[id]++
			}
		}
		for j, id := range spend {
			a.buckets[id] = spendAt[j]
		}
	}
	return usedUp
}

// beginLimited queues the start of a limited claim's transaction: its
// settings, and the queue's advisory lock, taken before any statement
// that reads what the limits have in use, so that it sees every claim
// committed before it.
//
// The claim's statements are planned for their parameters on every run
// (plan_cache_mode force_custom_plan). Otherwise Postgres switches a
// prepared statement to a generic plan after five runs on a connection,
// and for these statements the generic plan is the slower one: draining
// 20,000 tasks over 1,000 keys, the statement of a claim of about 500
// freed keys took 10 to 28 ms with it, and 6 to 8 ms planned each time
// (planning takes about 1 ms of that).
func (s *Stream) beginLimited(b *pgx.Batch) {
	b.Queue("BEGIN")
	if !s.cfg.SyncCommit {
		b.Queue("SET LOCAL synchronous_commit = off")
	}
	b.Queue("SET LOCAL plan_cache_mode = force_custom_plan")
	b.Queue("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", flowLockClass, s.cfg.Schema+"."+s.cfg.Queue)
}

// maxRounds bounds how many times one limited claim reads candidates.
const maxRounds = 4

// pollLimited is Poll with limits: one transaction, under an advisory
// lock per queue that every limited claim of the queue takes, so that
// each sees the claims before it. It reads the candidates and what the
// limits have in use, picks what the limits admit, and claims them and
// takes their tokens before it commits: two round trips, and one more
// each time a limit without PerKey is used up by the claim before it is
// full (the candidates behind that limit's tasks are read then).
func (s *Stream) pollLimited(ctx context.Context, p *flowPlan, limit int) ([]peonify.Delivery, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.dbError("claiming tasks", err)
	}
	// A connection released inside the transaction (after an error) is
	// closed by the pool, which ends the transaction and its lock.
	defer conn.Release()

	// Claims look at every key from time to time, and when tasks may have
	// become ready anywhere; in between, only at the keys whose permits
	// were given back (see addHints), so that a claim costs what it takes,
	// not what the keys with work number.
	s.hintMu.Lock()
	cursor := s.keyCursor
	full := !p.perKey || s.needFull || len(s.hints) == 0 || time.Since(s.lastFull) > fullScanEvery
	hints := make([]string, 0, len(s.hints))
	for k := range s.hints {
		hints = append(hints, k)
	}
	clear(s.hints)
	if full {
		s.needFull, s.lastFull = false, time.Now()
	}
	s.hintMu.Unlock()
	keyed := p.keyed
	if !full {
		keyed = p.keyedHinted
	}
	ok := false
	defer func() {
		if !ok && p.perKey { // the hints were not used: look everywhere next time
			s.addHints(nil)
		}
	}()
	if p.fast && !full {
		ds, err := s.claimFast(ctx, conn, p, limit, hints)
		ok = err == nil
		return ds, err
	}

	var (
		a           = newAdmission(p, limit, time.Time{})
		due         pgtype.Float8
		pos         int
		wrapped     bool // the rotation over keys saw every key
		moreUnkeyed bool // the unkeyed candidates filled their limit
		moreKeyed   bool
	)
	b := &pgx.Batch{}
	s.beginLimited(b)
	b.Queue("SELECT now()").QueryRow(func(r pgx.Row) error { return r.Scan(&a.now) })
	if p.rateDue != "" {
		b.Queue(p.rateDue, s.cfg.Queue).QueryRow(func(r pgx.Row) error { return r.Scan(&due) })
	}
	deep := false // this round reads the keys' later tasks
	depth := 1    // how many of them per key
	for round := 0; ; round++ {
		var cands []candidate
		args := []any{s.cfg.Queue, limit, s.cfg.Identity, cursor, slices.Clone(a.full), slices.Clone(a.ids), hints, depth}
		if !deep {
			b.Queue(p.unkeyed, args...).Query(func(rows pgx.Rows) error {
				var err error
				cands, err = scanCandidates(rows, p, cands, &pos, false)
				moreUnkeyed = len(cands) == limit
				return err
			})
		}
		if p.perKey {
			q := keyed
			if deep {
				q = p.keyedDeep
			}
			b.Queue(q, args...).Query(func(rows pgx.Rows) error {
				n := len(cands)
				var err error
				cands, err = scanCandidates(rows, p, cands, &pos, true)
				moreKeyed = len(cands)-n == limit
				if !deep {
					wrapped = full && !moreKeyed
				}
				return err
			})
		}
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return nil, s.dbError("claiming tasks", err)
		}
		usedUp := a.add(cands)
		b = &pgx.Batch{}
		switch {
		case len(a.out) == limit || round+1 == maxRounds:
		case !deep && usedUp && (moreUnkeyed || moreKeyed):
			continue // look behind the tasks of the limits used up
		case !deep && wrapped && p.keyedDeep != "" && wantDeep(p, cands):
			// Every key's next task is read: the later ones now, as many
			// of each key as the room left, shared among the keys, needs.
			keys := make(map[string]bool)
			for _, c := range cands {
				if c.keyed {
					keys[c.key] = true
				}
			}
			deep, depth = true, (limit-len(a.out))/max(len(keys), 1)+2
			continue
		}
		break
	}

	if p.perKey && len(a.out) == limit {
		// A full claim may have left keys with room unread: the next one
		// looks at every key again, from where this one stopped.
		s.addHints(nil)
	}
	if p.perKey && full {
		// The next claim's rotation starts after the last key this one
		// took a task of, or from the start after a claim that saw every
		// key.
		s.hintMu.Lock()
		switch {
		case a.lastPos >= 0:
			s.keyCursor = a.lastKey
		case wrapped:
			s.keyCursor = ""
		}
		s.hintMu.Unlock()
	}
	if len(a.out) < limit {
		// Tasks may wait for a token: wake up when the next one is due,
		// in a bucket that was empty before this claim or that this claim
		// emptied.
		next, ok := time.Duration(0), false
		if due.Valid {
			next, ok = time.Duration(due.Float64*float64(time.Second)), true
		}
		for id, e := range a.buckets {
			if d := e.Add(p.period[id.limit]).Sub(a.now); d > 0 && (!ok || d < next) {
				next, ok = d, true
			}
		}
		if ok {
			s.wakeAfter(next + time.Millisecond)
		}
	}
	if len(a.out) == 0 {
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return nil, s.dbError("claiming tasks", err)
		}
		ok = true
		return nil, nil
	}

	order := make(map[string]int, len(a.ids))
	for i, id := range a.ids {
		order[id] = i
	}
	b = &pgx.Batch{}
	ds := make([]peonify.Delivery, 0, len(a.ids))
	b.Queue(p.claim, s.cfg.Queue, a.ids, s.lease, s.cfg.Identity).Query(appendDeliveries(&ds))
	if len(a.buckets) > 0 {
		var names, keys []string
		var at []time.Time
		for id, e := range a.buckets {
			names = append(names, p.limits[id.limit].Name)
			keys = append(keys, id.key)
			// Rounded up to the microsecond Postgres keeps, so that a
			// stored bucket never holds more than it did.
			at = append(at, e.Add(time.Microsecond-time.Nanosecond).Truncate(time.Microsecond))
		}
		b.Queue(p.buckets, s.cfg.Queue, names, keys, at)
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		// Nothing is leased if the transaction failed; if only its reply
		// was lost, the leases expire and the rescuer hands the tasks out.
		return nil, s.dbError("claiming tasks", err)
	}
	slices.SortFunc(ds, func(x, y peonify.Delivery) int { return order[x.Task.ID] - order[y.Task.ID] })
	ok = true
	return ds, nil
}

// wakeAfter wakes the stream after d, when a rate limit's next token is
// due: at most one timer is armed, for the earliest time asked.
func (s *Stream) wakeAfter(d time.Duration) {
	at := time.Now().Add(max(d, 0))
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	if s.closed.Load() {
		return
	}
	if s.timer != nil && !s.timerAt.IsZero() && s.timerAt.Before(at) && time.Until(s.timerAt) > 0 {
		return // an earlier wake-up is armed
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timerAt = at
	s.timer = time.AfterFunc(time.Until(at), s.signal)
}

// wantDeep reports whether a claim that read the next task of every key
// and has room should read the later ones: when a next task it read could
// have company, that is when no PerKey limit holds its key to one task at
// a time. (Otherwise a key's later tasks are the next ones of the claims
// that follow.)
func wantDeep(p *flowPlan, cands []candidate) bool {
	for _, c := range cands {
		if !c.keyed {
			continue
		}
		t := peonify.Task{Type: c.typ, Key: c.key}
		single := false
		for i, l := range p.limits {
			if n, ok := l.ConcurrencyFor(c.key); p.conc[i] && l.PerKey && l.Applies(&t) && ok && n <= 1 {
				single = true
			}
		}
		if !single {
			return true
		}
	}
	return false
}

// maxHints bounds the keys a stream remembers for its next limited claim;
// past it, the claim looks at every key.
const maxHints = 10000

// fullScanEvery bounds how long limited claims look only at the keys
// whose permits were given back (the hints) before one looks at every key
// again, for the tasks that became ready without a notification: a
// retry's backoff ending, a scheduled task coming due, a missed NOTIFY.
const fullScanEvery = time.Second

// addHints records, for the next limited claim, keys whose permits were
// given back; nil means that tasks may be ready anywhere, so that the
// claim looks at every key. The Listener calls it too.
func (s *Stream) addHints(keys []string) {
	s.hintMu.Lock()
	defer s.hintMu.Unlock()
	if keys == nil || len(s.hints)+len(keys) > maxHints {
		s.needFull = true
		return
	}
	if s.hints == nil {
		s.hints = make(map[string]struct{})
	}
	for _, k := range keys {
		s.hints[k] = struct{}{}
	}
}

// freedKeys returns the keys whose permits the deliveries give back, or
// nil if a permit they give back is not a key's (a limit without PerKey),
// and whether they give back any.
func (p *flowPlan) freedKeys(ds []peonify.Delivery) (keys []string, any bool) {
	keys = []string{}
	for _, d := range ds {
		for i, l := range p.limits {
			if d.Task == nil || !p.conc[i] || !l.Applies(d.Task) {
				continue
			}
			any = true
			if !l.PerKey {
				return nil, true
			}
			if !slices.Contains(keys, d.Task.Key) {
				keys = append(keys, d.Task.Key)
			}
		}
	}
	return keys, any
}

// freed tells this stream's next limited claim, at once, and the other
// processors, through announceFreed, about the permits that the acked or
// nacked deliveries gave back.
func (s *Stream) freed(ds ...peonify.Delivery) {
	p := s.plan.Load()
	if p == nil {
		return
	}
	keys, any := p.freedKeys(ds)
	if !any {
		return
	}
	s.addHints(keys)
	s.wakeUp()
	s.freeMu.Lock()
	if keys == nil {
		s.freeAll = true
	}
	s.freeKeys = append(s.freeKeys, keys...)
	s.freeMu.Unlock()
	select {
	case s.freeKick <- struct{}{}:
	default:
	}
}

// announceFreed sends the freed keys to the other processors, until ctx
// ends: one NOTIFY on the free channel for all those given back while the
// previous one was sent, rather than one per ack.
func (s *Stream) announceFreed(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.freeKick:
		}
		s.freeMu.Lock()
		keys, all := s.freeKeys, s.freeAll
		s.freeKeys, s.freeAll = nil, false
		s.freeMu.Unlock()
		for _, note := range freeNotes(s.cfg.Queue, keys, all) {
			nctx, cancel := context.WithTimeout(ctx, maintainTimeout)
			_, err := s.pool.Exec(nctx, "SELECT pg_notify($1, $2)", s.free, note)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("pgstream: telling other processors of freed permits failed; they find them within a second",
					"queue", s.cfg.Queue, "err", err)
			}
		}
	}
}

// maxNote is the most bytes of a NOTIFY payload (Postgres allows less
// than 8000).
const maxNote = 7900

// freeNotes returns the payloads that announce keys (or, with all, any
// key), each at most maxNote bytes.
func freeNotes(queue string, keys []string, all bool) []string {
	if all {
		b, _ := json.Marshal(freeNote{Queue: queue})
		return []string{string(b)}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var notes []string
	for len(keys) > 0 {
		n := len(keys)
		for {
			b, _ := json.Marshal(freeNote{Queue: queue, Keys: keys[:n]})
			if len(b) <= maxNote {
				notes = append(notes, string(b))
				break
			}
			if n == 1 {
				b, _ = json.Marshal(freeNote{Queue: queue}) // a key too long to name: any key
				return append(notes, string(b))
			}
			n /= 2
		}
		keys = keys[n:]
	}
	return notes
}

// LimitStats reports, for each limit in the order SetLimits was given
// them, its running tasks (this stream's own, for a Local limit), its
// ready tasks, and for a PerKey limit its busiest keys. It reads the
// table: one query per limit.
func (s *Stream) LimitStats(ctx context.Context) ([]peonify.LimitStat, error) {
	if s.closed.Load() {
		return nil, peonify.ErrClosed
	}
	p := s.plan.Load()
	if p == nil {
		return nil, nil
	}
	out := make([]peonify.LimitStat, len(p.limits))
	for i, l := range p.limits {
		st := peonify.LimitStat{Name: l.Name}
		rows, err := s.pool.Query(ctx, p.stats[i], s.cfg.Queue, s.cfg.Identity)
		if err != nil {
			return nil, s.dbError("reading the use of limit "+l.Name, err)
		}
		for rows.Next() {
			var k peonify.KeyStat
			var r, w int64
			if err := rows.Scan(&k.Key, &k.InUse, &k.Waiting, &r, &w); err != nil {
				rows.Close()
				return nil, s.dbError("reading the use of limit "+l.Name, err)
			}
			st.InUse, st.Waiting = int(r), int(w)
			if l.PerKey {
				st.Keys = append(st.Keys, k)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, s.dbError("reading the use of limit "+l.Name, err)
		}
		out[i] = st
	}
	return out, nil
}

// claimFast is a hinted claim of a plan whose candidates all pass (see
// flowPlan.fast): the lock, the read and the claim in one transaction of
// one round trip.
func (s *Stream) claimFast(ctx context.Context, conn *pgxpool.Conn, p *flowPlan, limit int, hints []string) ([]peonify.Delivery, error) {
	b := &pgx.Batch{}
	s.beginLimited(b)
	ds := make([]peonify.Delivery, 0, min(limit, len(hints)+16))
	b.Queue(p.fastClaim, s.cfg.Queue, limit, s.cfg.Identity, "", []int32{}, []string{}, hints, 1, s.lease).Query(appendDeliveries(&ds))
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.dbError("claiming tasks", err)
	}
	if len(ds) == limit {
		s.addHints(nil) // keys with room may be left: look at every key next
	}
	slices.SortFunc(ds, func(x, y peonify.Delivery) int {
		if c := y.Task.Priority - x.Task.Priority; c != 0 {
			return c
		}
		return x.Task.EnqueuedAt.Compare(y.Task.EnqueuedAt)
	})
	return ds, nil
}
