package natsstream

import "sync"

// claimShards spreads the claims a process holds over this many locks.
const claimShards = 16

// claimSet holds the claims this process has not finished, by stream
// sequence, for the Inspector's view of running tasks. It is on every
// task's path, so it avoids sync.Map's allocations per entry.
type claimSet struct {
	shards [claimShards]struct {
		mu sync.Mutex
		m  map[uint64]*claim
	}
}

// add records c, replacing an older claim of the same message.
func (cs *claimSet) add(c *claim) {
	sh := &cs.shards[c.seq%claimShards]
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[uint64]*claim)
	}
	sh.m[c.seq] = c
	sh.mu.Unlock()
}

// remove drops c, unless a newer claim of the message replaced it.
func (cs *claimSet) remove(c *claim) {
	sh := &cs.shards[c.seq%claimShards]
	sh.mu.Lock()
	if sh.m[c.seq] == c {
		delete(sh.m, c.seq)
	}
	sh.mu.Unlock()
}

// get returns the claim of the message at seq, if this process holds one.
func (cs *claimSet) get(seq uint64) *claim {
	sh := &cs.shards[seq%claimShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[seq]
}

// removeIf drops every claim for which drop reports true.
func (cs *claimSet) removeIf(drop func(*claim) bool) {
	for i := range cs.shards {
		sh := &cs.shards[i]
		sh.mu.Lock()
		for seq, c := range sh.m {
			if drop(c) {
				delete(sh.m, seq)
			}
		}
		sh.mu.Unlock()
	}
}

// len returns how many claims the set holds.
func (cs *claimSet) len() int {
	n := 0
	for i := range cs.shards {
		sh := &cs.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
