package wsstream

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

// The Handler keeps the promises of every intake, over a real store: it
// acks a task only once stored, nacks it as retryable when the store
// fails, and recognises a resend, also after the task ran and after a
// restart (with a ResendLog).
func TestConformance(t *testing.T) {
	intaketest.Run(t, intaketest.Driver{
		ResendWindow: true,
		New: func(t *testing.T) intaketest.Start {
			resends := filepath.Join(t.TempDir(), "ws.resends")
			return func(store peonify.Enqueuer) (intaketest.Send, func()) {
				h, url := serve(t, store, Config{ResendLog: resends})
				c := dialRaw(t, url, nil)
				send := func(id string, payload []byte) intaketest.Answer {
					msg, err := json.Marshal(map[string]any{"id": id, "type": "t", "payload": json.RawMessage(payload)})
					if err != nil {
						t.Error(err)
						return 0
					}
					c.send(string(msg))
					got, err := c.next()
					if err != nil {
						t.Errorf("waiting for the answer to %s: %v", id, err)
						return 0
					}
					var a struct {
						Ack, Nack string
						Retryable bool
					}
					if err := json.Unmarshal([]byte(got), &a); err != nil {
						t.Errorf("answer %s: %v", got, err)
					}
					switch {
					case a.Ack == id:
						return intaketest.Accepted
					case a.Nack == id && a.Retryable:
						return intaketest.Retry
					case a.Nack == id:
						return intaketest.Refused
					}
					t.Errorf("answer %s to %s", got, id)
					return 0
				}
				stop := func() {
					_ = c.ws.CloseNow()
					if err := h.Shutdown(context.Background()); err != nil {
						t.Error(err)
					}
				}
				return send, stop
			}
		},
	})
}
