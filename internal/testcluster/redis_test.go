package testcluster

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestRedis starts a cluster, writes a key that 1 replica acknowledged,
// kills the master of its slot and reads the key back from the promoted
// replica.
func TestRedis(t *testing.T) {
	c := Redis(t)
	if got := len(c.Addrs()); got != 6 {
		t.Fatalf("got %d nodes, want 6", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := c.Client()
	defer cl.Close()
	for i := range 50 {
		k := "k{" + strconv.Itoa(i) + "}"
		slot, err := cl.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if int(slot) != Slot(k) {
			t.Fatalf("Slot(%q) = %d, the server says %d", k, Slot(k), slot)
		}
	}
	const key = "{q}:x"
	pipe := cl.Pipeline()
	pipe.Set(ctx, key, "v", 0)
	wait := pipe.Do(ctx, "WAIT", 1, 5000)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := wait.Int(); n != 1 {
		t.Fatalf("WAIT says %d replicas acknowledged the write, want 1", n)
	}
	killed, promoted, err := c.KillMaster(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s, %s took over", killed, promoted)
	if len(c.Addrs()) != 5 {
		t.Fatalf("%d nodes still up after the kill, want 5", len(c.Addrs()))
	}
	cl2 := c.Client()
	defer cl2.Close()
	got, err := cl2.Get(ctx, key).Result()
	if err != nil || got != "v" {
		t.Fatalf("after the failover, GET %s = %q, %v; want \"v\"", key, got, err)
	}
	if err := c.Restart(ctx, killed); err != nil {
		t.Fatal(err)
	}
	if m, err := c.MasterOf(ctx, key); err != nil || m != promoted {
		t.Fatalf("after the restart of %s, the master of %s is %s, %v; want %s", killed, key, m, err, promoted)
	}
}
