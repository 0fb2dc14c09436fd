package streamtest

import (
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy on loopback that a test puts between a client and
// its server to make the network fail the way a middlebox does when it
// drops a connection's state: Blackhole turns every connection it carries,
// and every new one, into a hole that accepts bytes and forwards nothing,
// without closing anything, so the client sees no error and no reset, only
// silence. The server's side of each connection is closed at once, as the
// server would end it once its own keepalives or heartbeats gave up, so
// that it lets go of what the connection held. Restore makes new
// connections work again; the connections that were blackholed stay dead,
// as they would behind a NAT that forgot them, until the client closes
// them.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	dead   bool                // blackholing
	conns  map[*proxyConn]bool // open client connections
	wg     sync.WaitGroup      // goroutines of the proxy
	closed bool
}

// proxyConn is one client connection and, while it forwards, its server
// connection.
type proxyConn struct {
	client, server net.Conn
	dead           bool // blackholed: forwards nothing ever again; guarded by Proxy.mu
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
	p := &Proxy{ln: ln, target: target, conns: make(map[*proxyConn]bool)}
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
			p.wg.Go(func() { p.back(c, server) })
		}
	}
	// Client to server while it forwards, then into the hole, until the
	// client closes its end.
	buf := make([]byte, 32<<10)
	for {
		n, err := c.client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			server := c.server
			if c.dead {
				server = nil
			}
			p.mu.Unlock()
			if server != nil {
				if _, werr := server.Write(buf[:n]); werr != nil {
					p.mu.Lock()
					dead := c.dead
					p.mu.Unlock()
					if !dead {
						return
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// back carries what the server sends to the client until the server side
// closes: then, unless blackholed, the client's end closes too.
func (p *Proxy) back(c *proxyConn, server net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		p.mu.Lock()
		dead := c.dead
		p.mu.Unlock()
		if dead {
			return // nothing more reaches the client
		}
		if n > 0 {
			if _, werr := c.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			c.client.Close() // the server hung up: pass that on
			return
		}
	}
}
