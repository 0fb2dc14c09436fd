package wsstream

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/intaketest"
)

// A message whose connection ends before the message does is not stored,
// however it is cut: in a frame's payload, right after a frame's header,
// or between two fragments when the first already holds a whole JSON
// object, which the WebSocket library alone returns as a whole message;
// by a close or a reset. Sent whole afterwards, it is stored once.
func TestMessageCutByConnectionEndIsNotStored(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{})
	addr := strings.TrimPrefix(url, "ws://")
	msg := []byte(`{"id":"cut-1","type":"t","payload":{"n":1}}`)
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"in a frame's payload", frame(true, 1, msg)[:20]},
		{"after a frame's header", frame(true, 1, msg)[:6]},
		{"between fragments", frame(false, 1, msg)},
		{"after the last fragment's header", append(frame(false, 1, msg), frame(true, 0, []byte("  "))[:6]...)},
	} {
		for _, reset := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, reset %v", tc.name, reset), func(t *testing.T) {
				conn := handshake(t, addr)
				if _, err := conn.Write(tc.bytes); err != nil {
					t.Fatal(err)
				}
				if reset {
					_ = conn.(*net.TCPConn).SetLinger(0)
				}
				conn.Close()
				time.Sleep(100 * time.Millisecond) // what the Handler would store, it stores within this
				if n := intaketest.Total(t, store); n != 0 {
					t.Fatalf("a message cut by the connection's end was stored: the store holds %d tasks", n)
				}
			})
		}
	}
	c := dialRaw(t, url, nil)
	c.send(string(msg))
	c.want(`{"ack":"cut-1"}`)
	if got := intaketest.Stored(t, store, "cut-1"); string(got.Payload) != `{"n":1}` {
		t.Fatalf("stored payload %q, want the whole one", got.Payload)
	}
	if n := intaketest.Total(t, store); n != 1 {
		t.Fatalf("the store holds %d tasks, want 1", n)
	}
}

// handshake opens a WebSocket to addr over a TCP connection of its own, on
// which the test writes frames, whole or in part.
func handshake(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", addr, base64.StdEncoding.EncodeToString(key))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// frame returns a client's masked frame of opcode (1 text, 0 a
// continuation) holding payload (under 126 bytes), the last of its
// message if fin.
func frame(fin bool, opcode byte, payload []byte) []byte {
	if fin {
		opcode |= 0x80
	}
	mask := [4]byte{0x5a, 0x13, 0xc7, 0x8e}
	f := append([]byte{opcode, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}
