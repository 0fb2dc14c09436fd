package natsstream

import (
	"maps"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// FuzzDecodeTask feeds decodeTask the header blocks and bodies that any
// producer may publish: it must never panic, and a message it accepts has
// a type and an ID, and survives a round trip through encodeTask when its
// headers are ones Enqueue accepts.
func FuzzDecodeTask(f *testing.F) {
	f.Add([]byte("NATS/1.0\r\nPeonify-Type: t\r\nNats-Msg-Id: x\r\n\r\n"), []byte("body"))
	f.Add([]byte("NATS/1.0\r\npeonify-type: t\r\nPeonify-Run-At: 2024-01-02T03:04:05Z\r\nPeonify-Attempts: 3\r\nk: v\r\n\r\n"), []byte{})
	f.Add([]byte("NATS/1.0\r\nPeonify-Type: t\r\nPeonify-Max-Attempts: -1\r\nPeonify-Priority: x\r\n\r\n"), []byte(nil))
	f.Add([]byte("NATS/1.0\r\nPeonify-Type:\r\nPeonify-Enqueued-At: yesterday\r\n\r\n"), []byte("{}"))
	f.Fuzz(func(t *testing.T, hdr, body []byte) {
		h, err := nats.DecodeHeadersMsg(hdr)
		if err != nil {
			return
		}
		stored := time.Unix(1700000000, 0)
		d, err := decodeTask(h, body, stored, 7)
		if err != nil {
			return
		}
		if d.task.Type == "" || d.task.ID == "" || d.task.EnqueuedAt.IsZero() || d.attempts < 0 || d.task.MaxAttempts < 0 {
			t.Fatalf("accepted an incomplete task: %+v", d)
		}
		if checkHeaders(&d.task) != nil {
			return
		}
		m := encodeTask(&d.task, "s")
		h2, err := nats.DecodeHeadersMsg(wireHeaders(m.Header))
		if err != nil {
			t.Fatalf("encodeTask made headers that do not decode: %v", err)
		}
		d2, err := decodeTask(h2, m.Data, stored, 7)
		if err != nil {
			t.Fatalf("re-decoding an encoded task: %v", err)
		}
		if d2.task.ID != d.task.ID || d2.task.Type != d.task.Type || !maps.Equal(d2.task.Headers, d.task.Headers) ||
			!d2.task.EnqueuedAt.Equal(d.task.EnqueuedAt) || !d2.task.RunAt.Equal(d.task.RunAt) {
			t.Fatalf("round trip changed the task:\n%+v\n%+v", d.task, d2.task)
		}
	})
}

// wireHeaders writes h as nats.go puts headers on the wire.
func wireHeaders(h nats.Header) []byte {
	var b strings.Builder
	b.WriteString("NATS/1.0\r\n")
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(k + ": " + strings.NewReplacer("\r", " ", "\n", " ").Replace(textproto.TrimString(v)) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}
