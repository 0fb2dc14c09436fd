package peonify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// KeyFunc derives a task's Key from the task, for producers that know
// what a task belongs to only from its content: a header, a field of the
// payload. It returns "" for no key.
type KeyFunc func(t *Task) string

// KeyFrom returns an Enqueuer that, before storing tasks in e, sets the
// Key of each task that has none to fn(task). Give it to the code or the
// intakes (webhooks, WebSockets, MQTT) that enqueue, so that the store's
// limits see the key; a key longer than MaxKeyLen makes Enqueue fail, as
// a producer's own would.
//
// The Enqueuer returned is only that: it is not a Stream. Give the
// processor the stream e itself.
func KeyFrom(e Enqueuer, fn KeyFunc) Enqueuer {
	return keyedEnqueuer{e: e, fn: fn}
}

type keyedEnqueuer struct {
	e  Enqueuer
	fn KeyFunc
}

func (k keyedEnqueuer) Enqueue(ctx context.Context, tasks ...*Task) error {
	for _, t := range tasks {
		if t != nil && t.Key == "" {
			t.Key = k.fn(t)
		}
	}
	return k.e.Enqueue(ctx, tasks...)
}

// HeaderKey is a KeyFunc that takes the key from the task header name.
func HeaderKey(name string) KeyFunc {
	return func(t *Task) string { return t.Headers[name] }
}

// JSONKey is a KeyFunc that takes the key from a field of the task's JSON
// payload: path names it, with dots between the names of nested objects
// ("tenant" or "account.id"). A string is the key as it is, a number or a
// boolean its JSON text; a payload that is not JSON, a missing field, or a
// field that is null, an object or an array gives no key.
//
// JSONKey decodes the payload each time; a producer in Go that has the
// value at hand sets Task.Key instead.
func JSONKey(path string) KeyFunc {
	names := strings.Split(path, ".")
	return func(t *Task) string {
		var v any
		d := json.NewDecoder(bytes.NewReader(t.Payload))
		d.UseNumber()
		if d.Decode(&v) != nil {
			return ""
		}
		for _, n := range names {
			m, ok := v.(map[string]any)
			if !ok {
				return ""
			}
			v = m[n]
		}
		switch v := v.(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		case bool:
			return fmt.Sprint(v)
		}
		return ""
	}
}
