package amqpstream

import (
	"math"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
)

// FuzzDecodeTask feeds the decoder what any AMQP producer could publish:
// properties and headers of every type, under the stream's header names
// and others. It must never panic, and a task must survive the round trip
// through encodeTask and decodeTask.
func FuzzDecodeTask(f *testing.F) {
	f.Add("id", "type", []byte("body"), "tenant", "x", int64(3), 1.5, []byte("7"), uint8(4), false)
	f.Add("", "", []byte(nil), "x-peonify-attempts", "-9", int64(math.MinInt64), math.NaN(), []byte{0xff}, uint8(255), true)
	f.Add("é", "t", []byte{0}, "x-peonify-run-at", "", int64(math.MaxInt64), math.Inf(1), []byte(""), uint8(0), true)
	f.Fuzz(func(t *testing.T, id, typ string, body []byte, key, s string, i int64, fl float64, raw []byte, prio uint8, redelivered bool) {
		h := amqp.Table{
			key:                    s,
			headerAttempts:         i,
			headerMaxAttempts:      fl,
			headerPriority:         string(raw),
			headerRunAt:            raw,
			headerLastError:        raw,
			"x-death":              []any{amqp.Table{"count": i}},
			"nested":               amqp.Table{"a": []any{i, s, fl}},
			"when":                 time.Unix(i%1e10, 0),
			"decimal":              amqp.Decimal{Scale: prio, Value: int32(i)},
			"b":                    redelivered,
			headerDeadAt:           fl,
			"x-peonify-unique-key": int32(i),
		}
		d := &amqp.Delivery{MessageId: id, Type: typ, Body: body, Headers: h, Priority: prio, Redelivered: redelivered}
		tk := decodeTask(d)
		if tk.ID == "" || tk.Attempt < 1 || tk.MaxAttempts < 0 || string(tk.Payload) != string(body) || tk.Payload == nil {
			t.Fatalf("decoded %+v from id %q body %q", tk, id, body)
		}
		_ = readMeta(h)
		_ = deadInfo(d)

		// What Enqueue stores comes back as it was.
		in := &peonify.Task{ID: tk.ID, Type: typ, Payload: body, Headers: map[string]string{}, MaxAttempts: tk.MaxAttempts,
			Priority: tk.Priority, UniqueKey: s, LastError: s}
		if k := key; k != "" && len(k) <= 255 && !reservedHeader(k) {
			in.Headers[k] = s
		}
		msg := encodeTask(in, int(max(min(i, 1000), 0)), int(prio))
		out := decodeTask(&amqp.Delivery{MessageId: msg.MessageId, Type: msg.Type, Body: msg.Body, Headers: msg.Headers, Priority: msg.Priority})
		if out.ID != in.ID || out.Type != in.Type || string(out.Payload) != string(in.Payload) || out.MaxAttempts != in.MaxAttempts ||
			out.Priority != in.Priority || out.UniqueKey != in.UniqueKey || out.Attempt != int(max(min(i, 1000), 0))+1 {
			t.Fatalf("round trip changed the task:\n in  %+v\n out %+v", *in, *out)
		}
		for k, v := range in.Headers {
			if out.Headers[k] != v {
				t.Fatalf("header %q = %q, want %q", k, out.Headers[k], v)
			}
		}
		if out.LastError != peonify.TruncateReason(s) {
			t.Fatalf("last error %q, want %q", out.LastError, s)
		}
	})
}
