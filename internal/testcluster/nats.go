package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// NATSNodes is how many nodes StartNATS starts: the smallest cluster that
// keeps a quorum of a stream with three replicas when one node is down.
const NATSNodes = 3

// natsHTTP asks the nodes' monitoring endpoints; it keeps no connection
// open, so that no goroutine of it outlives a test.
var natsHTTP = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// natsReadyWithin bounds the wait for a cluster, or a node started again,
// to serve JetStream requests.
const natsReadyWithin = 30 * time.Second

// NATS is a JetStream cluster of NATSNodes nats-server processes on
// 127.0.0.1, each with its own client and route ports and its own store
// directory. Nodes are addressed by index, 0 to NATSNodes-1. Its methods
// are safe for concurrent use.
type NATS struct {
	t     testing.TB
	bin   string
	name  string // the cluster's name
	nodes []*natsNode
}

// natsNode is one nats-server process of a NATS cluster.
type natsNode struct {
	name  string // the server's name, which JetStream reports as a leader
	port  int    // client port
	route int    // cluster (route) port
	http  int    // monitoring port, for the meta group's view (/jsz)
	args  []string

	mu   sync.Mutex // guards cmd, done and out
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *streamtest.BoundedBuffer
}

// StartNATS starts a 3-node JetStream cluster and returns once it has
// elected a meta leader that sees every other node as a current peer, and
// every node serves JetStream requests. Every
// process is stopped, and its data removed, when the test ends. Without
// the nats-server binary the test is skipped, or fails when
// PEONIFY_REQUIRE_SERVICES=1.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	bin := natsServerBinary(t)
	dir := t.TempDir()
	c := &NATS{t: t, bin: bin, name: "peonify-test-" + streamtest.RandHex(3)}
	ports := natsFreePorts(t, 3*NATSNodes)
	var routes []string
	for i := range NATSNodes {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[3*i+1]))
	}
	for i := range NATSNodes {
		n := &natsNode{name: fmt.Sprintf("%s-n%d", c.name, i), port: ports[3*i], route: ports[3*i+1], http: ports[3*i+2]}
		n.args = []string{
			"-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-m", strconv.Itoa(n.http), "-n", n.name,
			"-js", "-sd", filepath.Join(dir, "n"+strconv.Itoa(i)),
			"--cluster_name", c.name, "--cluster", "nats://127.0.0.1:" + strconv.Itoa(n.route),
			"--routes", strings.Join(natsOthers(routes, i), ","),
		}
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(c.stopAll)
	for i := range c.nodes {
		c.spawn(i)
	}
	for i := range c.nodes {
		c.waitNode(i)
	}
	c.waitMeta()
	return c
}

// natsServerBinary returns the path of nats-server, or skips the test.
func natsServerBinary(t testing.TB) string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	const debian = "/usr/sbin/nats-server" // not on a normal user's PATH
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	msg := "a JetStream cluster test needs nats-server (Debian package nats-server, or a release from the NATS project) on PATH"
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes that an error")
	}
	t.Skip(msg)
	return ""
}

// natsFreePorts returns n distinct TCP ports that nothing listens on now.
func natsFreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// natsOthers returns urls without the one at i.
func natsOthers(urls []string, i int) []string {
	out := make([]string, 0, len(urls)-1)
	out = append(out, urls[:i]...)
	return append(out, urls[i+1:]...)
}

// URL returns the client URL of node i.
func (c *NATS) URL(i int) string { return "nats://127.0.0.1:" + strconv.Itoa(c.nodes[i].port) }

// URLs returns the client URLs of every node, node 0 first.
func (c *NATS) URLs() []string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return urls
}

// Servers returns the client URLs of every node, node first and then the
// others in order, comma-separated as nats.Connect takes them: with
// nats.DontRandomize, a client connects to node first and fails over to
// the next.
func (c *NATS) Servers(first int) string {
	urls := c.URLs()
	first %= len(urls)
	return strings.Join(append(urls[first:], urls[:first]...), ",")
}

// Name returns the server name of node i, as JetStream reports it.
func (c *NATS) Name(i int) string { return c.nodes[i].name }

// Node returns the index of the node with the server name name, or -1.
func (c *NATS) Node(name string) int {
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	return -1
}

// Output returns the last output of node i's process.
func (c *NATS) Output(i int) string {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.out == nil {
		return ""
	}
	return n.out.String()
}

// spawn starts the process of node i, without waiting for it to serve.
func (c *NATS) spawn(i int) {
	c.t.Helper()
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		c.t.Fatalf("testcluster: NATS node %d is already running", i)
	}
	cmd := exec.Command(c.bin, n.args...)
	n.out = new(streamtest.BoundedBuffer)
	cmd.Stdout, cmd.Stderr = n.out, n.out
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("testcluster: starting nats-server node %d: %v", i, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
}

// waitNode waits until node i serves JetStream requests, which a node
// does once the cluster has a meta leader and the node knows it.
func (c *NATS) waitNode(i int) {
	c.t.Helper()
	n := c.nodes[i]
	deadline := time.Now().Add(natsReadyWithin)
	var last error
	for time.Now().Before(deadline) {
		n.mu.Lock()
		done := n.done
		n.mu.Unlock()
		select {
		case <-done:
			c.t.Fatalf("testcluster: nats-server node %d exited at start; its output:\n%s", i, c.Output(i))
		default:
		}
		if last = testenv.JetStreamReady(c.URL(i)); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("testcluster: NATS node %d did not serve JetStream requests within %s: %v; its output:\n%s",
		i, natsReadyWithin, last, c.Output(i))
}

// waitMeta waits until the meta group's leader sees every other node as
// a current peer. Until then it places a stream with three replicas on
// no peers ("no suitable peers for placement"), as a cluster just started
// does.
func (c *NATS) waitMeta() {
	c.t.Helper()
	deadline := time.Now().Add(natsReadyWithin)
	var last error
	for time.Now().Before(deadline) {
		if last = c.metaCurrent(); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("testcluster: the JetStream meta group did not gather every node within %s: %v", natsReadyWithin, last)
}

// natsJSZ is the part of a server's /jsz that tells the meta group's
// state.
type natsJSZ struct {
	Meta *struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
}

// metaCurrent returns nil if the meta leader sees every other node as a
// current peer.
func (c *NATS) metaCurrent() error {
	leader := ""
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		jsz, err := c.jsz(i)
		if err != nil {
			return err
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return fmt.Errorf("node %d knows no meta leader", i)
		}
		leader = jsz.Meta.Leader
	}
	l := c.Node(leader)
	if l < 0 || !c.Running(l) {
		return fmt.Errorf("the meta leader %q is not a running node", leader)
	}
	jsz, err := c.jsz(l)
	if err != nil {
		return err
	}
	if jsz.Meta == nil || jsz.Meta.Leader != leader {
		return fmt.Errorf("node %d no longer leads the meta group", l)
	}
	current := 0
	for _, r := range jsz.Meta.Replicas {
		if r.Current && !r.Offline {
			current++
		}
	}
	if current < len(c.nodes)-1 {
		return fmt.Errorf("the meta leader, node %d, sees %d of its %d peers current", l, current, len(c.nodes)-1)
	}
	return nil
}

// jsz returns node i's /jsz.
func (c *NATS) jsz(i int) (*natsJSZ, error) {
	resp, err := natsHTTP.Get("http://127.0.0.1:" + strconv.Itoa(c.nodes[i].http) + "/jsz")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var jsz natsJSZ
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return nil, fmt.Errorf("node %d's /jsz: %w", i, err)
	}
	return &jsz, nil
}

// ConnectedTo returns the index of the running node that has a client
// connection named name (nats.Name), or -1 if none has.
func (c *NATS) ConnectedTo(name string) (int, error) {
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		resp, err := natsHTTP.Get("http://127.0.0.1:" + strconv.Itoa(c.nodes[i].http) + "/connz?limit=1024")
		if err != nil {
			return -1, err
		}
		var connz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		err = json.NewDecoder(resp.Body).Decode(&connz)
		resp.Body.Close()
		if err != nil {
			return -1, fmt.Errorf("node %d's /connz: %w", i, err)
		}
		for _, cn := range connz.Conns {
			if cn.Name == name {
				return i, nil
			}
		}
	}
	return -1, nil
}

// Kill ends node i with SIGKILL, as a crash or a power cut would, and
// waits until the process has exited.
func (c *NATS) Kill(i int) {
	c.t.Helper()
	n := c.nodes[i]
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		c.t.Fatalf("testcluster: NATS node %d is not running", i)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Start starts node i again, after Kill, with the same ports and store
// directory, and waits until it serves JetStream requests and the meta
// group's leader sees it as a current peer. The node then
// catches up with the streams' leaders in the background: see
// WaitStreamCurrent.
func (c *NATS) Start(i int) {
	c.t.Helper()
	c.spawn(i)
	c.waitNode(i)
	c.waitMeta()
}

// Running reports whether node i's process is running.
func (c *NATS) Running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && !closed(n.done)
}

// StreamLeader returns the index of the node that leads stream, asking
// through any running node. It waits up to within for the stream to have
// a leader (it has none during an election).
func (c *NATS) StreamLeader(stream string, within time.Duration) (int, error) {
	var leader int
	err := c.streamInfo(stream, within, func(si *jetstream.StreamInfo) error {
		if si.Cluster == nil || si.Cluster.Leader == "" {
			return errors.New("the stream has no leader")
		}
		if leader = c.Node(si.Cluster.Leader); leader < 0 {
			return fmt.Errorf("the stream's leader %q is not a node of this cluster", si.Cluster.Leader)
		}
		return nil
	})
	return leader, err
}

// WaitStreamCurrent waits up to within until stream has a leader and every
// other replica is current (caught up with the leader), as after a node
// was started again.
func (c *NATS) WaitStreamCurrent(stream string, within time.Duration) error {
	return c.streamInfo(stream, within, func(si *jetstream.StreamInfo) error {
		if si.Cluster == nil || si.Cluster.Leader == "" {
			return errors.New("the stream has no leader")
		}
		if got := len(si.Cluster.Replicas) + 1; got < si.Config.Replicas {
			return fmt.Errorf("the leader knows %d of the stream's %d replicas", got, si.Config.Replicas)
		}
		for _, r := range si.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica %s is not current (offline %v, %d operations behind, last seen %s ago)",
					r.Name, r.Offline, r.Lag, r.Active)
			}
		}
		return nil
	})
}

// streamInfo asks, through each running node in turn, for stream's
// information until check accepts it or within has passed.
func (c *NATS) streamInfo(stream string, within time.Duration, check func(*jetstream.StreamInfo) error) error {
	deadline := time.Now().Add(within)
	var last error
	for try := 0; ; try++ {
		i := try % len(c.nodes)
		if c.Running(i) {
			last = natsStreamInfo(c.URL(i), stream, check)
			if last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("testcluster: stream %s: %w (after %s)", stream, last, within)
}

func natsStreamInfo(url, stream string, check func(*jetstream.StreamInfo) error) error {
	nc, js, err := testenv.JetStream(url, nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	return check(s.CachedInfo())
}

// stopAll stops every node: SIGTERM, then SIGKILL after 10s.
func (c *NATS) stopAll() {
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		n.mu.Lock()
		cmd, done := n.cmd, n.done
		n.cmd = nil
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		wg.Go(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				c.t.Errorf("testcluster: NATS node %d did not stop within 10s of SIGTERM; killed it", i)
			}
		})
	}
	wg.Wait()
}
