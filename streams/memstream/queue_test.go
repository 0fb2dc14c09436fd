package memstream

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestQueueMatchesSortedModel drives a queue with random pushes (mostly in
// order, as in real use, some out of order), pops and removals, and checks
// it against a sorted slice.
func TestQueueMatchesSortedModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var (
		q     queue
		model []*entry
		seq   uint64
		clock int
	)
	cmp := func(a, b *entry) int {
		switch {
		case a.k.less(&b.k):
			return -1
		case b.k.less(&a.k):
			return 1
		}
		return 0
	}
	for step := range 50_000 {
		switch op := rng.IntN(10); {
		case op < 5: // push
			seq++
			clock += rng.IntN(3)
			at := clock
			if rng.IntN(8) == 0 {
				at -= rng.IntN(50) // out of order
			}
			e := &entry{k: key{prio: rng.IntN(2), at: base.Add(time.Duration(at)), seq: seq}}
			if rng.IntN(4) != 0 {
				e.k.prio = 0
			}
			q.push(e)
			i, _ := slices.BinarySearchFunc(model, e, cmp)
			model = slices.Insert(model, i, e)
		case op < 8: // pop
			if len(model) == 0 {
				if q.peek() != nil {
					t.Fatalf("step %d: peek of an empty queue returned an entry", step)
				}
				continue
			}
			if got := q.pop(); got != model[0] {
				t.Fatalf("step %d: pop returned %+v, want %+v", step, got.k, model[0].k)
			}
			model = model[1:]
		default: // remove any
			if len(model) == 0 {
				continue
			}
			i := rng.IntN(len(model))
			q.remove(model[i])
			if model[i].pos != -1 {
				t.Fatalf("step %d: removed entry keeps position %d", step, model[i].pos)
			}
			model = slices.Delete(model, i, i+1)
		}
		if q.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, q.len(), len(model))
		}
	}
	n := 0
	q.each(func(*entry) { n++ })
	if all := q.drain(); len(all) != n || n != len(model) || q.len() != 0 || q.peek() != nil {
		t.Fatalf("drain returned %d, each saw %d, model has %d; queue left with %d", len(all), n, len(model), q.len())
	}
}

// TestQueueRunStaysBounded checks that one long-lived entry at the head of
// the run does not make the run grow with every entry removed behind it,
// as with one slow task among many fast ones in the leased queue.
func TestQueueRunStaysBounded(t *testing.T) {
	var q queue
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	slow := &entry{k: key{at: base, seq: 0}}
	q.push(slow)
	for i := 1; i <= 100_000; i++ {
		e := &entry{k: key{at: base.Add(time.Duration(i)), seq: uint64(i)}}
		q.push(e)
		if e.pos&inRun == 0 {
			t.Fatalf("entry %d, in order, went to the heap", i)
		}
		q.remove(e)
	}
	if c := cap(q.run); c > 64 {
		t.Errorf("run capacity grew to %d behind one live entry", c)
	}
	if q.pop() != slow || q.len() != 0 {
		t.Error("the long-lived entry was lost")
	}
}
