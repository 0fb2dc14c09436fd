package streamtest

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on loopback that a test puts between a client and
// its server to make the network fail the way real networks do:
//
//   - Blackhole turns every connection it carries, and every new one, into
//     a hole that accepts bytes and forwards nothing, without closing
//     anything, so the client sees no error and no reset, only silence: a
//     half-open connection. The server's side of each connection is closed
//     at once, as the server would end it once its own keepalives or
//     heartbeats gave up, so that it lets go of what the connection held.
//     Restore makes new connections work again; the connections that were
//     blackholed stay dead, as they would behind a NAT that forgot them,
//     until the client closes them.
//   - Partition stops all traffic both ways, closing nothing on either
//     side, as a cut link does; Heal lets it flow again, what was sent
//     meanwhile delivered late and in order, as TCP retransmits it. A
//     connection either end gave up on meanwhile is closed once the
//     partition heals.
//   - SetFaults adds latency with jitter and a bandwidth limit to every
//     connection, each way.
//   - ResetMidReply cuts the next replies of the server in half and resets
//     their connections (RST), as a crashed middlebox or a peer's reset
//     does.
type Proxy struct {
	ln     net.Listener
	target string
	done   chan struct{} // closed by Close

	mu     sync.Mutex
	dead   bool                // blackholing
	conns  map[*proxyConn]bool // open client connections
	wg     sync.WaitGroup      // goroutines of the proxy
	closed bool
	faults Faults
	healed chan struct{} // closed unless a partition holds the traffic
	resets int           // replies still to cut and reset
}

// Faults are the network's flaws the proxy adds to every connection, each
// way. The zero Faults forwards at once and as fast as loopback does.
type Faults struct {
	// Latency delays every chunk of bytes this long, each way.
	Latency time.Duration
	// Jitter adds up to this much more to each chunk's delay, at random;
	// chunks still arrive in order, as on a TCP connection.
	Jitter time.Duration
	// Bandwidth, in bytes per second each way, limits each connection;
	// 0 leaves it unlimited.
	Bandwidth int
}

// proxyConn is one client connection and, while it forwards, its server
// connection.
type proxyConn struct {
	client, server net.Conn
	dead           bool // blackholed: forwards nothing ever again; guarded by Proxy.mu
}

// chunk is bytes read from one end, due at the other at a time, or the
// end of the stream (eof).
type chunk struct {
	b   []byte
	due time.Time
	eof bool
}

// NewProxy starts a proxy on 127.0.0.1 to target (host:port) that
// forwards until Blackhole. It is closed, with every connection, when the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healed := make(chan struct{})
	close(healed)
	p := &Proxy{ln: ln, target: target, conns: make(map[*proxyConn]bool), healed: healed, done: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, host:port, for the client to dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole makes every connection, open or new, swallow what the client
// sends and send nothing back, while staying open.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dead = true
	for c := range p.conns {
		p.kill(c)
	}
}

// Restore makes new connections forward again. Blackholed ones stay dead.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.dead = false
	p.mu.Unlock()
}

// Partition stops every byte, both ways, on every connection, open or
// new, until Heal; nothing is closed and nothing is lost.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.healed:
		p.healed = make(chan struct{})
	default: // partitioned already
	}
}

// Heal ends a partition: what was held is delivered, in order.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.healed:
	default:
		close(p.healed)
	}
}

// SetFaults sets the latency, jitter and bandwidth of every connection,
// open or new, from now on.
func (p *Proxy) SetFaults(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// ResetMidReply arms n resets: each of the next n chunks the server sends,
// on whichever connection, reaches the client only in part, and then that
// connection is reset (RST to the client, the server's side closed).
func (p *Proxy) ResetMidReply(n int) {
	p.mu.Lock()
	p.resets += n
	p.mu.Unlock()
}

// Disarm cancels the armed resets that have not happened yet, and returns
// how many there were.
func (p *Proxy) Disarm() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.resets
	p.resets = 0
	return n
}

// Resets returns how many armed resets have not happened yet.
func (p *Proxy) Resets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resets
}

// Held returns how many blackholed connections the client still holds
// open: a client that dropped its dead connections holds none.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if c.dead {
			n++
		}
	}
	return n
}

// Close stops the proxy and closes every connection. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		close(p.done)
	}
	p.closed = true
	for c := range p.conns {
		c.client.Close()
		if c.server != nil {
			c.server.Close()
		}
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// kill blackholes c: its server side is closed, so nothing more reaches
// the server or comes back, and its client side stays open. p.mu must be
// held.
func (p *Proxy) kill(c *proxyConn) {
	if c.dead {
		return
	}
	c.dead = true
	if c.server != nil {
		c.server.Close()
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		c := &proxyConn{client: client}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			return
		}
		p.conns[c] = true
		dead := p.dead
		c.dead = dead
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c) })
	}
}

// waitHealed waits while a partition holds the traffic, and reports
// whether the proxy is still open.
func (p *Proxy) waitHealed() bool {
	p.mu.Lock()
	healed := p.healed
	p.mu.Unlock()
	select {
	case <-healed:
		return true
	case <-p.done:
		return false
	}
}

// isDead reports whether c is blackholed.
func (p *Proxy) isDead(c *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return c.dead
}

// due returns when bytes read now are due at the other end: after the
// latency and a random jitter, and not before the bytes read earlier.
func (p *Proxy) due(last time.Time) time.Time {
	p.mu.Lock()
	f := p.faults
	p.mu.Unlock()
	d := f.Latency
	if f.Jitter > 0 {
		d += rand.N(f.Jitter)
	}
	return maxTime(time.Now().Add(d), last)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// serve carries one client connection until the client closes it.
func (p *Proxy) serve(c *proxyConn) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		c.client.Close()
		if c.server != nil {
			c.server.Close()
		}
		p.mu.Unlock()
	}()
	// A partitioned network lets no connection through: the client's
	// handshake with the server waits for the heal.
	if !p.waitHealed() {
		return
	}
	var up chan chunk
	p.mu.Lock()
	dead := c.dead
	p.mu.Unlock()
	if !dead {
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			return // the client sees the connection close, as with a refused one
		}
		p.mu.Lock()
		if c.dead || p.closed {
			server.Close()
		} else {
			c.server = server
		}
		p.mu.Unlock()
		if c.server != nil {
			// Server to client, until the server side is closed (by the
			// server, or by Blackhole).
			down := make(chan chunk, 256)
			p.wg.Go(func() { p.back(c, server, down) })
			p.wg.Go(func() { p.forward(c, c.client, down, true) })
			up = make(chan chunk, 256)
			p.wg.Go(func() { p.forward(c, server, up, false) })
		}
	}
	// Client to server while it forwards, then into the hole, until the
	// client closes its end.
	if up != nil {
		defer close(up)
	}
	var last time.Time
	for {
		buf := make([]byte, 32<<10)
		n, err := c.client.Read(buf)
		if n > 0 && up != nil && !p.isDead(c) {
			last = p.due(last)
			up <- chunk{b: buf[:n], due: last}
		}
		if err != nil {
			return
		}
	}
}

// back reads what the server sends and passes it on to the client's
// forwarder until the server side closes: then, unless blackholed, the
// client's end closes too, once what came before has been delivered.
func (p *Proxy) back(c *proxyConn, server net.Conn, down chan<- chunk) {
	defer close(down)
	var last time.Time
	for {
		buf := make([]byte, 32<<10)
		n, err := server.Read(buf)
		if p.isDead(c) {
			return // nothing more reaches the client
		}
		if n > 0 {
			last = p.due(last)
			down <- chunk{b: buf[:n], due: last}
		}
		if err != nil {
			down <- chunk{eof: true, due: p.due(last)} // the server hung up: pass that on
			return
		}
	}
}

// forward writes the chunks of ch to dst, each when it is due, while no
// partition holds the traffic, at the bandwidth of the faults, until ch
// closes. Once writing fails it discards the rest, so that the reader
// feeding ch never blocks. Chunks to the client may be cut by an armed
// reset.
func (p *Proxy) forward(c *proxyConn, dst net.Conn, ch <-chan chunk, toClient bool) {
	failed := false
	for ck := range ch {
		if failed {
			continue
		}
		if d := time.Until(ck.due); d > 0 {
			select {
			case <-time.After(d):
			case <-p.done:
			}
		}
		if !p.waitHealed() || p.isDead(c) {
			failed = true
			continue
		}
		if ck.eof {
			dst.Close()
			failed = true
			continue
		}
		if toClient && p.takeReset() {
			_, _ = dst.Write(ck.b[:len(ck.b)/2])
			p.reset(c)
			failed = true
			continue
		}
		if err := p.write(dst, ck.b); err != nil {
			if !p.isDead(c) {
				c.client.Close()
				p.mu.Lock()
				if c.server != nil {
					c.server.Close()
				}
				p.mu.Unlock()
			}
			failed = true
		}
	}
}

// takeReset uses up an armed reset, if any.
func (p *Proxy) takeReset() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resets == 0 {
		return false
	}
	p.resets--
	return true
}

// reset ends c with an RST to the client and closes its server side.
func (p *Proxy) reset(c *proxyConn) {
	if tc, ok := c.client.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.client.Close()
	p.mu.Lock()
	if c.server != nil {
		c.server.Close()
	}
	p.mu.Unlock()
}

// write writes b to dst at the bandwidth of the faults.
func (p *Proxy) write(dst net.Conn, b []byte) error {
	p.mu.Lock()
	rate := p.faults.Bandwidth
	p.mu.Unlock()
	if rate <= 0 {
		_, err := dst.Write(b)
		return err
	}
	piece := max(rate/50, 1) // 20ms worth
	for len(b) > 0 {
		n := min(piece, len(b))
		if _, err := dst.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		select {
		case <-time.After(time.Duration(n) * time.Second / time.Duration(rate)):
		case <-p.done:
			return net.ErrClosed
		}
	}
	return nil
}
