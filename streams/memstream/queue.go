package memstream

import "time"

// key orders entries in a queue: higher prio first, then earlier at, then
// lower seq. An entry's key is set by whoever pushes it: the ready queue
// uses (Priority, time available, enqueue order), the scheduled queue
// (0, time available, enqueue order) and the leased queue (0, deadline,
// claim token).
type key struct {
	prio int
	at   time.Time
	seq  uint64
}

func (a *key) less(b *key) bool {
	if a.prio != b.prio {
		return a.prio > b.prio
	}
	if c := a.at.Compare(b.at); c != 0 {
		return c < 0
	}
	return a.seq < b.seq
}

// queue is a priority queue of entries ordered by key, built for the common
// case where entries arrive in order: tasks enqueued one after another,
// leases taken with the same duration. An entry that is not less than the
// newest one in the run is appended to a FIFO run in O(1); any other goes
// to a binary heap. The least entry is the lesser of the run's head and the
// heap's top. Removing an entry from the run leaves a hole that pops skip;
// when the run is full and at least half holes, it is squeezed.
//
// Each entry is in at most one queue at a time; entry.pos records where.
type queue struct {
	run   []*entry // in key order; nil slots are holes
	head  int      // run[:head] are holes; run[head] is not, unless live is 0
	live  int      // entries in run that are not holes
	tail  key      // key of the newest entry appended to the run
	heap  []*entry
	count int
}

// inRun marks an entry.pos as a position in the run, not the heap.
const inRun = 1 << 62

func (q *queue) len() int { return q.count }

func (q *queue) push(e *entry) {
	q.count++
	if q.live == 0 || !e.k.less(&q.tail) {
		if len(q.run) == cap(q.run) && q.live <= len(q.run)/2 {
			q.squeeze()
		}
		e.pos = inRun | len(q.run)
		q.run = append(q.run, e)
		q.live++
		q.tail = e.k
		return
	}
	e.pos = len(q.heap)
	q.heap = append(q.heap, e)
	q.up(e.pos)
}

// peek returns the least entry, or nil when the queue is empty.
func (q *queue) peek() *entry {
	var r *entry
	if q.live > 0 {
		r = q.run[q.head]
	}
	if len(q.heap) > 0 && (r == nil || q.heap[0].k.less(&r.k)) {
		r = q.heap[0]
	}
	return r
}

// pop removes and returns the least entry; the queue must not be empty.
func (q *queue) pop() *entry {
	e := q.peek()
	q.remove(e)
	return e
}

// remove takes e, which must be in q, out of the queue.
func (q *queue) remove(e *entry) {
	q.count--
	if e.pos&inRun != 0 {
		i := e.pos &^ inRun
		q.run[i] = nil
		q.live--
		if q.live == 0 {
			q.reset()
		} else if i == q.head {
			for q.head++; q.run[q.head] == nil; q.head++ {
			}
		}
		e.pos = -1
		return
	}
	i, last := e.pos, len(q.heap)-1
	if i != last {
		q.swap(i, last)
	}
	q.heap[last] = nil
	q.heap = q.heap[:last]
	if i != last && !q.down(i) {
		q.up(i)
	}
	e.pos = -1
	if c := cap(q.heap); c > 1024 && len(q.heap) < c/4 {
		q.heap = append(make([]*entry, 0, c/2), q.heap...)
	}
}

// reset empties the run, which holds only holes, giving back the memory
// of a large burst.
func (q *queue) reset() {
	q.run, q.head = q.run[:0], 0
	if cap(q.run) > 4096 {
		q.run = nil
	}
}

// squeeze moves the run's entries to its front, dropping the holes, so
// that a long-lived entry at the head does not make the run grow without
// bound behind it.
func (q *queue) squeeze() {
	n := 0
	for _, e := range q.run[q.head:] {
		if e != nil {
			e.pos = inRun | n
			q.run[n] = e
			n++
		}
	}
	clear(q.run[n:])
	q.run, q.head = q.run[:n], 0
}

// each calls f for every entry, in no particular order.
func (q *queue) each(f func(*entry)) {
	for _, e := range q.run[q.head:] {
		if e != nil {
			f(e)
		}
	}
	for _, e := range q.heap {
		f(e)
	}
}

// drain empties the queue and returns its entries, in no particular order.
func (q *queue) drain() []*entry {
	var all []*entry
	q.each(func(e *entry) {
		e.pos = -1
		all = append(all, e)
	})
	*q = queue{}
	return all
}

func (q *queue) swap(i, j int) {
	q.heap[i], q.heap[j] = q.heap[j], q.heap[i]
	q.heap[i].pos = i
	q.heap[j].pos = j
}

func (q *queue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.heap[i].k.less(&q.heap[p].k) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

// down moves the entry at i towards the leaves and reports whether it moved.
func (q *queue) down(i0 int) bool {
	i, n := i0, len(q.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && q.heap[r].k.less(&q.heap[l].k) {
			j = r
		}
		if !q.heap[j].k.less(&q.heap[i].k) {
			break
		}
		q.swap(i, j)
		i = j
	}
	return i > i0
}
