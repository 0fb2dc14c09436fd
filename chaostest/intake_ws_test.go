//go:build unix

package chaostest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/wsstream"
)

// scenarioIntakeWS puts a WebSocket intake (wsstream) in front of the
// cell's queue, and sends it tasks three ways:
//
//   - a sender of its own, one task at a time through a proxy that cuts
//     every third answer mid-reply and resets the connection: the task was
//     stored, the sender sees only the reset, reconnects and sends it again;
//   - a sender whose connection drops while a message is partly sent (a
//     frame cut in its payload, or a message whose last fragment never
//     comes; closed or reset), then sends it whole on a new connection;
//   - the Go client (wsstream.Dial), sending many tasks at once through the
//     proxy while answers are cut, which reconnects and resends what was
//     not acknowledged by itself.
//
// Every task must run, and, as the intake promises (wsstream's README,
// Resends), a resend within the resend window is acknowledged without
// storing the task again, on every store, RabbitMQ included: the store
// must see each task ID once, with its whole payload, and nothing from a
// message that did not arrive whole.
func scenarioIntakeWS(c *cell) {
	store := &countingStore{enq: c.st.enq, calls: make(map[string][]string)}
	logs := &resendCounter{}
	intake, err := wsstream.New(store, wsstream.Config{Logger: slog.New(logs)})
	if err != nil {
		c.t.Fatal(err)
	}
	srv := httptest.NewServer(intake)
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := intake.Shutdown(ctx); err != nil {
			c.t.Errorf("the intake's Shutdown: %v", err)
		}
	}()
	direct := strings.TrimPrefix(srv.URL, "http://")
	px := streamtest.NewProxy(c.t, direct)
	body := payload(work{Ms: 10})
	frame := func(id string) []byte {
		b, err := json.Marshal(map[string]any{"id": id, "type": "chaos", "payload": json.RawMessage(body)})
		if err != nil {
			c.t.Fatal(err)
		}
		return b
	}
	stored := func(id string) {
		c.mu.Lock()
		c.enqueued = append(c.enqueued, id)
		c.mu.Unlock()
	}

	// One task at a time, every third answer cut.
	const cutTotal = 45
	cut, cutResends := 0, 0
	ws := dialWS(c, "ws://"+px.Addr()+"/tasks")
	defer func() {
		if ws != nil {
			_ = ws.CloseNow()
		}
	}()
	for i := range cutTotal {
		id := fmt.Sprintf("ws-cut-%04d", i)
		if i%3 == 0 {
			px.ResetMidReply(1) // the next bytes the server sends are this task's ack
		}
		for try := 0; ; try++ {
			if try == 10 {
				c.t.Fatalf("task %s: no answer in 10 tries", id)
			}
			if ws == nil {
				ws = dialWS(c, "ws://"+px.Addr()+"/tasks")
			}
			answer, err := roundTrip(ws, frame(id))
			if err != nil {
				_ = ws.CloseNow()
				ws = nil
				if try == 0 {
					cut++
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if want := `{"ack":"` + id + `"}`; answer != want {
				c.t.Fatalf("task %s: answered %s, want %s", id, answer, want)
			}
			if try > 0 {
				cutResends++
			}
			break
		}
		stored(id)
	}
	if cut == 0 {
		c.t.Fatal("no answer was cut: the proxy's resets did not hit the acks")
	}

	// A message cut while it is sent, then sent whole.
	type drop struct {
		name  string
		reset bool                            // RST rather than FIN
		send  func(conn net.Conn, msg []byte) // writes part of msg
	}
	drops := []drop{
		{"mid-frame", false, func(conn net.Conn, msg []byte) { f := wsFrame(true, 1, msg); _, _ = conn.Write(f[:len(f)/2]) }},
		{"mid-frame-rst", true, func(conn net.Conn, msg []byte) { f := wsFrame(true, 1, msg); _, _ = conn.Write(f[:len(f)-1]) }},
		// The whole JSON arrived, in a first fragment; the message's last
		// fragment never does.
		{"mid-message", false, func(conn net.Conn, msg []byte) { _, _ = conn.Write(wsFrame(false, 1, msg)) }},
		{"mid-message-rst", true, func(conn net.Conn, msg []byte) {
			_, _ = conn.Write(wsFrame(false, 1, msg[:len(msg)/2]))
			_, _ = conn.Write(wsFrame(true, 0, msg[len(msg)/2:])[:3])
		}},
	}
	var truncated []string
	for i := range 20 {
		d := drops[i%len(drops)]
		id := fmt.Sprintf("ws-%s-%04d", d.name, i)
		conn := rawWSConn(c, direct, "/tasks")
		d.send(conn, frame(id))
		if d.reset {
			_ = conn.(*net.TCPConn).SetLinger(0)
		}
		_ = conn.Close()
		truncated = append(truncated, id)
	}
	time.Sleep(200 * time.Millisecond) // time for the server to act on the cut messages, were it to
	if n := store.seen(truncated...); n > 0 {
		c.t.Errorf("%d tasks of messages cut while they were sent reached the store", n)
	}
	if ws == nil {
		ws = dialWS(c, "ws://"+px.Addr()+"/tasks")
	}
	for _, id := range truncated {
		answer, err := roundTrip(ws, frame(id))
		if err != nil {
			c.t.Fatalf("task %s, sent whole after a cut message: %v", id, err)
		}
		if want := `{"ack":"` + id + `"}`; answer != want {
			c.t.Fatalf("task %s, sent whole after a cut message: answered %s, want %s", id, answer, want)
		}
		stored(id)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	ws = nil

	// The Go client, many tasks at once, answers cut.
	client, err := wsstream.Dial(context.Background(), "ws://"+px.Addr()+"/tasks", wsstream.DialOptions{
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: slog.New(discard{})})
	if err != nil {
		c.t.Fatal(err)
	}
	const groups, perGroup = 4, 25
	var clientIDs []string
	var failed atomic.Int32
	for g := range groups {
		px.ResetMidReply(1)
		var wg sync.WaitGroup
		for i := range perGroup {
			id := fmt.Sprintf("ws-client-%d-%03d", g, i)
			clientIDs = append(clientIDs, id)
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := client.Send(ctx, &peonify.Task{ID: id, Type: "chaos", Payload: body}); err != nil {
					failed.Add(1)
					c.t.Errorf("the Go client's Send of %s: %v", id, err)
					return
				}
				stored(id)
			})
		}
		wg.Wait()
	}
	_ = client.Close()
	if failed.Load() > 0 {
		c.t.FailNow()
	}

	// Each task reached the store once, whole: every resend was
	// recognised, also one that came while the first send was still
	// being stored.
	twice := checkWhole(c, store, body)
	store.mu.Lock()
	reached := len(store.calls)
	for _, id := range twice {
		c.t.Errorf("task %s reached the store %d times: its resend was not recognised", id, len(store.calls[id]))
	}
	store.mu.Unlock()
	if got := cutTotal + len(truncated) + len(clientIDs); reached != got {
		c.t.Errorf("%d task IDs reached the store, want the %d sent", reached, got)
	}
	if n := logs.n.Load(); int(n) < cutResends {
		c.t.Errorf("the intake recognised %d resends, fewer than the %d answers cut", n, cutResends)
	}

	c.waitUp(c.startChild(nil))
	c.waitAll()
	c.waitQuiet()
	c.finish()
	c.note("%d acks cut and resent, %d messages cut while sent (none stored), %d tasks by the Go client; %d resends recognised, none stored twice",
		cut, len(truncated), len(clientIDs), logs.n.Load())
}

// countingStore passes each Enqueue on to the cell's queue and records the
// payload of each task that reached it, by ID.
type countingStore struct {
	enq   peonify.Enqueuer
	mu    sync.Mutex
	calls map[string][]string
}

// Enqueue stores tasks in the cell's queue and records them.
func (s *countingStore) Enqueue(ctx context.Context, tasks ...*peonify.Task) error {
	err := s.enq.Enqueue(ctx, tasks...)
	s.mu.Lock()
	for _, t := range tasks {
		s.calls[t.ID] = append(s.calls[t.ID], string(t.Payload))
	}
	s.mu.Unlock()
	return err
}

// seen returns how many of ids reached the store.
func (s *countingStore) seen(ids ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range ids {
		if len(s.calls[id]) > 0 {
			n++
		}
	}
	return n
}

// resendCounter is a slog.Handler that counts the resends an intake
// recognised, and drops every record.
type resendCounter struct{ n atomic.Int64 }

func (h *resendCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *resendCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "resent within") {
		h.n.Add(1)
	}
	return nil
}
func (h *resendCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *resendCounter) WithGroup(string) slog.Handler      { return h }

// discard is a slog.Handler that drops every record.
type discard struct{}

func (discard) Enabled(context.Context, slog.Level) bool  { return false }
func (discard) Handle(context.Context, slog.Record) error { return nil }
func (d discard) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discard) WithGroup(string) slog.Handler           { return d }

// dialWS opens a WebSocket to url.
func dialWS(c *cell, url string) *websocket.Conn {
	c.t.Helper()
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ws, _, err := websocket.Dial(ctx, url, nil)
		cancel()
		if err == nil {
			return ws
		}
		if try == 5 {
			c.t.Fatalf("connecting to the WebSocket intake: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// roundTrip sends one message and reads its answer.
func roundTrip(ws *websocket.Conn, msg []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, msg); err != nil {
		return "", err
	}
	_, answer, err := ws.Read(ctx)
	return string(answer), err
}

// rawWSConn makes a WebSocket handshake of its own over a TCP connection to
// addr and returns the connection, on which the test writes frames (see
// wsFrame), whole or in part.
func rawWSConn(c *cell, addr, path string) net.Conn {
	c.t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, addr, base64.StdEncoding.EncodeToString(key))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		c.t.Fatalf("WebSocket handshake: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		c.t.Fatalf("WebSocket handshake answered %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// wsFrame returns a client's frame (masked, RFC 6455 section 5.2) of
// opcode (1 text, 0 a continuation) holding payload, the last of its
// message if fin.
func wsFrame(fin bool, opcode byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	mask := [4]byte{0x5a, 0x13, 0xc7, 0x8e}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// cutWebhooks sends n deliveries of body, signed with sig, to the GitHub
// route of the webhook intake at addr, each first on a connection that
// drops while the body is partly sent: half of it, closed or reset, or all
// of it in chunks but without the last, empty chunk that ends a chunked
// body. Then it sends each whole, which must be stored as a new task (202
// Accepted): nothing of the cut request was stored. It returns the task
// IDs.
func cutWebhooks(c *cell, addr string, n int, body []byte, sig string) []string {
	c.t.Helper()
	type drop struct {
		name  string
		reset bool
		body  func() string
	}
	drops := []drop{
		{"half", false, func() string { return fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body[:len(body)/2]) }},
		{"half-rst", true, func() string { return fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body[:len(body)/2]) }},
		{"all-but-last-byte", false, func() string { return fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body[:len(body)-1]) }},
		{"chunked-no-end", false, func() string { return fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(body), body) }},
	}
	headers := func(id string) string {
		return "POST /hooks/github HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\n" +
			"X-GitHub-Event: push\r\nX-GitHub-Delivery: " + id + "\r\nX-Hub-Signature-256: " + sig + "\r\n"
	}
	var ids []string
	for i := range n {
		d := drops[i%len(drops)]
		id := fmt.Sprintf("hook-%s-%04d", d.name, i)
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			c.t.Fatal(err)
		}
		_, _ = conn.Write([]byte(headers(id) + d.body()))
		if d.reset {
			_ = conn.(*net.TCPConn).SetLinger(0)
		}
		_ = conn.Close()
		ids = append(ids, id)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, id := range ids {
		req := githubPush(c.t, addr, body, sig, id)
		resp, err := client.Do(req)
		if err != nil {
			c.t.Fatalf("delivery %s, sent whole after a cut request: %v", id, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Peonify-Duplicate") != "" {
			c.t.Errorf("delivery %s, sent whole after a request cut while its body was sent: %s %s, want 202 Accepted: the cut request stored something",
				id, resp.Status, msg)
		}
		c.mu.Lock()
		c.enqueued = append(c.enqueued, "chaos:"+id)
		c.mu.Unlock()
	}
	return ids
}

// checkWhole fails the cell if a task reached store with another payload
// than want, and returns the IDs that reached it more than once.
func checkWhole(c *cell, store *countingStore, want []byte) (twice []string) {
	store.mu.Lock()
	defer store.mu.Unlock()
	for id, calls := range store.calls {
		for _, p := range calls {
			if p != string(want) {
				c.t.Errorf("task %s reached the store with payload %q, want %q", id, p, want)
			}
		}
		if len(calls) > 1 {
			twice = append(twice, id)
		}
	}
	slices.Sort(twice)
	return twice
}
