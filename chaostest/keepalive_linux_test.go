package chaostest

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestChaosKeepalive cuts a processor off from its server with no trace
// on either side: the processor runs in a network namespace of its own,
// joined to the server's by a veth pair, and tc netem then drops every
// packet both ways, as a link that went dark or a NAT that forgot the
// connection does. Unlike the in-process proxy of the halfopen cell, no
// one answers the processor's TCP keepalives. It shows, for each stream
// on a server, how long the processor takes to notice and what notices it
// (the first warning it logs: its StoreTimeout, the client's heartbeat, a
// TCP timeout), that it works again once the packets flow, and that
// nothing is lost. It needs root (network namespaces, tc), so it runs
// under PEONIFY_CHAOS=1 only, the streams side by side, in about a
// minute and a half.
func TestChaosKeepalive(t *testing.T) {
	if !chaosEnabled() {
		t.Skip("PEONIFY_CHAOS=1 runs it: it makes network namespaces and needs root")
	}
	if why := netnsUnavailable(); why != "" {
		t.Skipf("skipped: %s (it needs root, ip and tc, and the netem queueing discipline)", why)
	}
	var tbl Table
	t.Run("cells", func(t *testing.T) {
		for _, b := range backends {
			if b.name == "sqlite" || b.cluster {
				continue
			}
			t.Run("keepalive/"+b.name, func(t *testing.T) {
				t.Parallel()
				scenarioKeepalive(newCell(t, b, "keepalive", false, &tbl))
			})
		}
	})
	t.Logf("chaos table (keepalive):\n%s", tbl.String())
	appendTable(t, &tbl)
}

// keepaliveDark is how long the link stays dark at most: the time
// the processor has to notice.
const keepaliveDark = 40 * time.Second

// scenarioKeepalive runs a processor in a network namespace, and drops
// every packet between it and the server while it holds tasks, until it
// logs that something is wrong (at most keepaliveDark), then lets them
// flow again.
func scenarioKeepalive(c *cell) {
	ns := newNetns(c.t)
	u, err := url.Parse(c.spec.Addr)
	if err != nil {
		c.t.Fatal(err)
	}
	u.Host = forwardFrom(c.t, ns.hostIP, u.Host)
	spec := c.spec
	spec.Addr = u.String()
	c.bin = ns.wrapper(c.t)
	v := c.startChild(func(o *orders) { o.Spec = spec })
	c.bin = ""
	c.waitUp(v)
	c.enqueue(c.tasks("ka", 100, work{Ms: 200})...)
	if !c.waitHolding(v, 2) {
		c.t.Fatal("the processor in the namespace never held 2 tasks")
	}
	mark := len(v.Output())
	ns.dark(c.t, true)
	cut := time.Now()
	held := c.heldBy(v.pid)
	var first string
	waitFor(keepaliveDark, func() bool {
		first = firstWarning(v.Output()[mark:])
		return first != ""
	})
	noticed := time.Since(cut)
	time.Sleep(time.Second) // the client acts on what it noticed
	ns.dark(c.t, false)
	healed := time.Now()
	back, ok := c.feedUntil("ka2-", v.pid, 40*time.Second)
	if !ok {
		c.t.Fatalf("the processor completed no task within %s of the packets flowing again", back.Round(time.Second))
	}
	c.inFlight(held, c.claimedBy(v.pid, cut.Add(-time.Second), healed.Add(time.Second)))
	c.waitAll()
	c.waitQuiet()
	c.finish()
	if first == "" {
		c.note("nothing noticed within %s; working again %s after the heal", keepaliveDark, back.Round(100*time.Millisecond))
		return
	}
	c.note("noticed after %s by %s; working again %s after the heal", noticed.Round(100*time.Millisecond), detector(first),
		back.Round(100*time.Millisecond))
	c.t.Logf("first warning after the link went dark: %s", first)
}

var logLevel = regexp.MustCompile(`level=(WARN|ERROR)`)

// firstWarning returns the first line of out that logs a warning or an
// error, or "".
func firstWarning(out string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if logLevel.MatchString(line) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// detector names what a warning says noticed the dead link.
func detector(line string) string {
	l := strings.ToLower(line)
	switch {
	case strings.Contains(l, "did not answer a fetch or a ping"):
		return "natsstream's fetch check, which reconnects"
	case strings.Contains(l, "exception (501)") && strings.Contains(l, "i/o timeout"):
		return "the AMQP heartbeat (amqp091's read deadline of 3 intervals)"
	case strings.Contains(l, "heartbeat"):
		return "the client's heartbeat"
	case strings.Contains(l, "stale connection"):
		return "the client's pings (stale connection)"
	case strings.Contains(l, "connection timed out"):
		return "TCP (keepalive or retransmission timeout)"
	case strings.Contains(l, "storetimeout") || strings.Contains(l, "store timeout") || strings.Contains(l, "deadline exceeded"):
		return "the processor's StoreTimeout"
	case strings.Contains(l, "i/o timeout"):
		return "the client's read timeout"
	}
	if len(line) > 100 {
		line = line[:100] + "…"
	}
	return fmt.Sprintf("%q", line)
}

// netnsUnavailable says why network namespaces cannot be made here, or
// returns "".
func netnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	for _, bin := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is not installed"
		}
	}
	name := "pkprobe-" + randHex(3)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
	return ""
}

// netns is a network namespace joined to the test's by a veth pair: the
// host end hostIP, the namespace's end nsIP.
type netns struct {
	name, host, peer string
	hostIP, nsIP     string
	drop             []string // the root qdisc that drops every packet
}

// newNetns makes a network namespace and its veth pair, with unique names
// and a /24 of 10.0.0.0/8 no interface uses, all removed when the test
// ends (also when it fails).
func newNetns(t *testing.T) *netns {
	t.Helper()
	id := randHex(3)
	n := &netns{name: "peonify-ka-" + id, host: "pkah" + id, peer: "pkan" + id}
	addrs, err := exec.Command("ip", "-4", "-o", "addr").Output()
	if err != nil {
		t.Fatal(err)
	}
	for {
		net24 := fmt.Sprintf("10.%d.%d.", 100+rand.N(150), rand.N(256))
		if !strings.Contains(string(addrs), net24) {
			n.hostIP, n.nsIP = net24+"1", net24+"2"
			break
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", n.name).Run() // removes the peer, and with it the pair
		_ = exec.Command("ip", "link", "del", n.host).Run()
	})
	for _, args := range [][]string{
		{"ip", "netns", "add", n.name},
		{"ip", "link", "add", n.host, "type", "veth", "peer", "name", n.peer},
		{"ip", "link", "set", n.peer, "netns", n.name},
		{"ip", "addr", "add", n.hostIP + "/24", "dev", n.host},
		{"ip", "link", "set", n.host, "up"},
		{"ip", "netns", "exec", n.name, "ip", "addr", "add", n.nsIP + "/24", "dev", n.peer},
		{"ip", "netns", "exec", n.name, "ip", "link", "set", n.peer, "up"},
		{"ip", "netns", "exec", n.name, "ip", "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	n.drop = []string{"netem", "loss", "100%"}
	probe := append([]string{"qdisc", "add", "dev", n.host, "root"}, n.drop...)
	if exec.Command("tc", probe...).Run() != nil {
		n.drop = []string{"blackhole"} // no netem in this kernel
	} else {
		_ = exec.Command("tc", "qdisc", "del", "dev", n.host, "root").Run()
	}
	return n
}

// wrapper writes a program that runs this test binary inside the
// namespace, for a cell's children, and returns its path.
func (n *netns) wrapper(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", n.name, bin)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// dark drops every packet on the veth pair, both ways, when on, and lets
// them flow again when not: with netem's loss 100%, or, on a kernel
// without netem, the blackhole queueing discipline, which drops silently
// too (the sender sees its packets leave).
func (n *netns) dark(t *testing.T, on bool) {
	t.Helper()
	op := "del"
	if on {
		op = "add"
	}
	for _, args := range [][]string{
		{"tc", "qdisc", op, "dev", n.host, "root"},
		{"ip", "netns", "exec", n.name, "tc", "qdisc", op, "dev", n.peer, "root"},
	} {
		if on {
			args = append(args, n.drop...)
		}
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// forwardFrom listens on ip and forwards each connection to target
// (host:port), until the test ends; it returns its address. The server
// listens on loopback, which the namespace cannot reach.
func forwardFrom(t *testing.T, ip, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				in.Close()
				out.Close()
				return
			}
			conns = append(conns, in, out)
			mu.Unlock()
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			wg.Go(func() { pipe(out, in) })
			wg.Go(func() { pipe(in, out) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
