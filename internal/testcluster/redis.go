package testcluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures StartRedis. The zero value starts 3 masters with
// a replica each.
type RedisOptions struct {
	// Masters is the number of masters, at least 3 (what redis-cli
	// accepts). Defaults to 3.
	Masters int

	// NodeTimeout is the cluster-node-timeout: how long a master must be
	// unreachable before its replica takes over. Defaults to 1 second,
	// far below Redis's own default (15s), so that tests see failovers
	// quickly.
	NodeTimeout time.Duration

	// NoReplicas starts masters only: no failover, half the processes.
	// Benchmarks that compare a cluster with one server use it.
	NoReplicas bool

	// Dir holds each node's directory, log and nodes.conf. It must exist.
	Dir string
}

// RedisCluster is a running Redis Cluster whose nodes are processes of
// this one, each master with a replica unless RedisOptions.NoReplicas. Its methods are safe for concurrent use.
type RedisCluster struct {
	opts RedisOptions

	mu    sync.Mutex
	nodes []*redisNode // masters first, in the order they were created
}

// redisNode is one redis-server process.
type redisNode struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been waited for
}

// Redis starts a Redis Cluster of 3 masters with a replica each, its data
// under t.TempDir(), and stops it when the test ends. Without redis-server
// and redis-cli it skips the test, or fails it when
// PEONIFY_REQUIRE_SERVICES=1.
func Redis(t testing.TB) *RedisCluster {
	t.Helper()
	needBinaries(t, "redis-server", "redis-cli")
	c, err := StartRedis(context.Background(), RedisOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// needBinaries skips or fails t when a binary is missing from PATH.
func needBinaries(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			msg := "testcluster: needs " + name + " in PATH to start a cluster"
			if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
				t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes a missing server an error")
			}
			t.Skip(msg)
		}
	}
}

// StartRedis starts a Redis Cluster: opts.Masters masters and, unless
// opts.NoReplicas, a replica for each, on free loopback ports, and returns once every node reports
// cluster_state:ok and every replica is in sync with its master. The
// caller must call Stop, also when the cluster is no longer healthy.
func StartRedis(ctx context.Context, opts RedisOptions) (*RedisCluster, error) {
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.Masters < 3 {
		return nil, fmt.Errorf("testcluster: RedisOptions.Masters is %d; redis-cli creates clusters of at least 3 masters", opts.Masters)
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = time.Second
	}
	if opts.Dir == "" {
		return nil, errors.New("testcluster: RedisOptions.Dir is empty: give a directory for the nodes' files")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := &RedisCluster{opts: opts}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	replicas := 1
	if opts.NoReplicas {
		replicas = 0
	}
	ports, err := freePorts((1 + replicas) * opts.Masters)
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		n, err := c.startNode(p)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := waitPing(ctx, n); err != nil {
			return nil, err
		}
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("testcluster: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitHealthy(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// freePorts returns n ports such that each port and the port 10000 above
// it (the cluster bus) are free on the loopback interface.
func freePorts(n int) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("testcluster: found no free pairs of loopback ports (port and port+10000)")
		}
		p := 20000 + rand.IntN(25000)
		if seen[p] || seen[p+10000] || !portFree(p) || !portFree(p+10000) {
			continue
		}
		seen[p], seen[p+10000] = true, true
		ports = append(ports, p)
	}
	return ports, nil
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// startNode starts a cluster-enabled redis-server on port p.
func (c *RedisCluster) startNode(p int) (*redisNode, error) {
	dir := filepath.Join(c.opts.Dir, "redis-"+strconv.Itoa(p))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testcluster: %w", err)
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(p),
		"--bind", "127.0.0.1",
		"--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--cluster-node-timeout", strconv.FormatInt(c.opts.NodeTimeout.Milliseconds(), 10),
		// A replica takes over however long ago it last heard from its
		// master: the tests kill masters, and want the failover.
		"--cluster-replica-validity-factor", "0",
		"--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
		"--save", "",
		"--appendonly", "no",
		"--repl-diskless-sync", "yes",
		"--repl-diskless-sync-delay", "0",
		"--daemonize", "no",
	)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testcluster: starting redis-server on port %d: %w", p, err)
	}
	n := &redisNode{addr: "127.0.0.1:" + strconv.Itoa(p), dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(n.done)
	}()
	return n, nil
}

// waitPing waits until n answers PING.
func waitPing(ctx context.Context, n *redisNode) error {
	cl := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1, DialTimeout: time.Second})
	defer cl.Close()
	for {
		if cl.Ping(ctx).Err() == nil {
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("testcluster: redis-server %s exited at start:\n%s", n.addr, n.logTail())
		case <-ctx.Done():
			return fmt.Errorf("testcluster: redis-server %s did not answer PING: %w\n%s", n.addr, ctx.Err(), n.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// logTail returns the end of n's log, for errors.
func (n *redisNode) logTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (n *redisNode) alive() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// waitHealthy waits until every live node says cluster_state:ok, every
// live replica's link to its master is up, and all live nodes agree on
// who serves every slot.
func (c *RedisCluster) waitHealthy(ctx context.Context) error {
	var last error
	for {
		if last = c.healthy(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testcluster: the Redis Cluster did not become healthy: %v", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *RedisCluster) healthy(ctx context.Context) error {
	view := ""
	for _, n := range c.live() {
		cl := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
		info, err := cl.ClusterInfo(ctx).Result()
		var repl, slots string
		if err == nil {
			repl, err = cl.Info(ctx, "replication").Result()
		}
		if err == nil {
			slots, err = slotView(ctx, cl)
		}
		_ = cl.Close()
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", n.addr, err)
		case !strings.Contains(info, "cluster_state:ok"):
			return fmt.Errorf("%s: cluster state not ok", n.addr)
		case strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up"):
			return fmt.Errorf("%s: replica not in sync with its master", n.addr)
		case !c.opts.NoReplicas && strings.Contains(repl, "role:master") && !strings.Contains(repl, "connected_slaves:1"):
			return fmt.Errorf("%s: master without a connected replica", n.addr)
		case view != "" && slots != view:
			return fmt.Errorf("%s: sees other masters than the other nodes", n.addr)
		}
		view = slots
	}
	return nil
}

// slotView returns the node's view of who serves the slots.
func slotView(ctx context.Context, cl *redis.Client) (string, error) {
	ss, err := cl.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, s := range ss {
		if len(s.Nodes) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%d-%d:%s ", s.Start, s.End, s.Nodes[0].Addr)
	}
	return b.String(), nil
}

// live returns the nodes still running.
func (c *RedisCluster) live() []*redisNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ns []*redisNode
	for _, n := range c.nodes {
		if n.alive() {
			ns = append(ns, n)
		}
	}
	return ns
}

// Addrs returns the host:port of every running node, masters and
// replicas: the seed addresses of a redis.ClusterClient.
func (c *RedisCluster) Addrs() []string {
	var as []string
	for _, n := range c.live() {
		as = append(as, n.addr)
	}
	return as
}

// Client returns a new redis.ClusterClient of the cluster; the caller
// closes it.
func (c *RedisCluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
}

// MasterOf returns the address of the master that serves key's slot, as
// the first live node that answers sees it.
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (string, error) {
	slot := Slot(key)
	var last error
	for _, n := range c.live() {
		cl := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
		ss, err := cl.ClusterSlots(ctx).Result()
		_ = cl.Close()
		if err != nil {
			last = err
			continue
		}
		for _, s := range ss {
			if s.Start <= slot && slot <= s.End && len(s.Nodes) > 0 {
				return s.Nodes[0].Addr, nil
			}
		}
		last = fmt.Errorf("%s serves no node for slot %d", n.addr, slot)
	}
	return "", fmt.Errorf("testcluster: finding the master of %q: %v", key, last)
}

// ReplicaOf returns the address of a replica of the master that serves
// key's slot, as the first live node that answers sees it.
func (c *RedisCluster) ReplicaOf(ctx context.Context, key string) (string, error) {
	slot := Slot(key)
	for _, n := range c.live() {
		cl := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
		ss, err := cl.ClusterSlots(ctx).Result()
		_ = cl.Close()
		if err != nil {
			continue
		}
		for _, s := range ss {
			if s.Start <= slot && slot <= s.End && len(s.Nodes) > 1 {
				return s.Nodes[1].Addr, nil
			}
		}
	}
	return "", fmt.Errorf("testcluster: found no replica of the master of %q", key)
}

// Freeze stops the node at addr with SIGSTOP, as a stalled machine would,
// until Thaw. Keep it short: after RedisOptions.NodeTimeout the cluster
// takes the node for failed. Only on Unix.
func (c *RedisCluster) Freeze(addr string) error { return c.signal(addr, sigStop) }

// Thaw resumes a node that Freeze stopped.
func (c *RedisCluster) Thaw(addr string) error { return c.signal(addr, sigCont) }

func (c *RedisCluster) signal(addr string, sig os.Signal) error {
	if sig == nil {
		return errors.New("testcluster: Freeze and Thaw need SIGSTOP and SIGCONT (Unix)")
	}
	for _, n := range c.live() {
		if n.addr == addr {
			return n.cmd.Process.Signal(sig)
		}
	}
	return fmt.Errorf("testcluster: no running node %s in this cluster", addr)
}

// KillMaster kills the master that serves key's slot with SIGKILL, and
// returns once one of the surviving nodes has taken over the slot and
// every live node agrees on it: the address of the old and of the new
// master. The killed node stays down until Restart.
func (c *RedisCluster) KillMaster(ctx context.Context, key string) (killed, promoted string, err error) {
	killed, err = c.MasterOf(ctx, key)
	if err != nil {
		return "", "", err
	}
	var victim *redisNode
	for _, n := range c.live() {
		if n.addr == killed {
			victim = n
		}
	}
	if victim == nil {
		return "", "", fmt.Errorf("testcluster: the master %s of %q is not a node of this cluster", killed, key)
	}
	_ = victim.cmd.Process.Kill()
	<-victim.done
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+10*c.opts.NodeTimeout)
	defer cancel()
	for {
		promoted, err = c.MasterOf(ctx, key)
		if err == nil && promoted != killed && c.agreed(ctx) == nil {
			return killed, promoted, nil
		}
		select {
		case <-ctx.Done():
			return killed, "", fmt.Errorf("testcluster: no replica took over from %s: %v (last master seen %q)", killed, ctx.Err(), promoted)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart starts again the node at addr, which KillMaster killed, with its
// nodes.conf: it rejoins the cluster as a replica of the master that took
// over from it. Restart returns once the cluster is healthy again, every
// master with a replica in sync.
func (c *RedisCluster) Restart(ctx context.Context, addr string) error {
	c.mu.Lock()
	i := slices.IndexFunc(c.nodes, func(n *redisNode) bool { return n.addr == addr })
	c.mu.Unlock()
	if i < 0 {
		return fmt.Errorf("testcluster: no node %s in this cluster", addr)
	}
	if c.nodes[i].alive() {
		return fmt.Errorf("testcluster: node %s is running: kill it first", addr)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	n, err := c.startNode(p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitPing(ctx, n); err != nil {
		return err
	}
	return c.waitHealthy(ctx)
}

// agreed reports whether every live node says cluster_state:ok and sees
// the same masters.
func (c *RedisCluster) agreed(ctx context.Context) error {
	view := ""
	for _, n := range c.live() {
		cl := redis.NewClient(&redis.Options{Addr: n.addr, MaxRetries: -1})
		info, err := cl.ClusterInfo(ctx).Result()
		var slots string
		if err == nil {
			slots, err = slotView(ctx, cl)
		}
		_ = cl.Close()
		switch {
		case err != nil:
			return err
		case !strings.Contains(info, "cluster_state:ok"):
			return fmt.Errorf("%s: cluster state not ok", n.addr)
		case view != "" && slots != view:
			return fmt.Errorf("%s: sees other masters than the other nodes", n.addr)
		}
		view = slots
	}
	return nil
}

// Stop kills every node and waits for it to exit. It may be called more
// than once.
func (c *RedisCluster) Stop() {
	c.mu.Lock()
	nodes := c.nodes
	c.mu.Unlock()
	for _, n := range nodes {
		if n.alive() {
			_ = n.cmd.Process.Kill()
		}
	}
	for _, n := range nodes {
		<-n.done
	}
}

// Slot returns the Redis Cluster hash slot of key, honouring hash tags.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
