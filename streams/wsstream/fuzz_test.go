package wsstream

import (
	"bytes"
	"maps"
	"testing"
)

// FuzzDecode feeds arbitrary messages to the decoder. It must never panic;
// a message it accepts must give a valid task that the client's encoder
// sends back unchanged.
func FuzzDecode(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzDecode.
	f.Add([]byte(`{"id":"1","type":"t","payload":{"a":[1,2.5,"x"]},"headers":{"k":"v"}}`))
	f.Add([]byte(`{"id":"2","type":"t","payload_b64":"AAH/","priority":3,"max_attempts":2,"run_at":"2030-01-02T03:04:05.5+02:00","unique_key":"u"}`))
	f.Add([]byte(`{"id":"3","type":"t","payload":null}`))
	f.Add([]byte(`{"id":"","type":""}`))
	f.Add([]byte(`{not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		task, bad := decode(data)
		if bad != nil {
			if task != nil {
				t.Fatal("decode returned a task and an error")
			}
			return
		}
		if err := task.Validate(); err != nil || task.ID == "" {
			t.Fatalf("decode accepted an invalid task %+v: %v", task, err)
		}
		frame, err := encode(task)
		if err != nil {
			if task.RunAt.Year() > 9999 || task.RunAt.Year() < 0 {
				return // JSON cannot carry it back; the server got it from a client that could
			}
			t.Fatalf("encode(%+v): %v", task, err)
		}
		again, bad := decode(frame)
		if bad != nil {
			t.Fatalf("decode(encode(%+v)) = %v; frame %s", task, bad, frame)
		}
		switch {
		case again.ID != task.ID, again.Type != task.Type, !bytes.Equal(again.Payload, task.Payload),
			len(again.Headers) != len(task.Headers), len(task.Headers) > 0 && !maps.Equal(again.Headers, task.Headers),
			again.Priority != task.Priority, again.MaxAttempts != task.MaxAttempts,
			again.UniqueKey != task.UniqueKey, !again.RunAt.Equal(task.RunAt):
			t.Fatalf("round trip changed the task:\n got %+v\nwant %+v", again, task)
		}
	})
}
