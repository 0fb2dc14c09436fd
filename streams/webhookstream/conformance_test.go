package webhookstream

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

// The Handler keeps the promises of every intake, over a real store: 202
// only once stored, 503 when the store fails, and a redelivery recognised
// while the store holds its task. It has no resend window of its own.
func TestConformance(t *testing.T) {
	intaketest.Run(t, intaketest.Driver{
		TaskID: func(id string) string { return "github:" + id },
		New: func(t *testing.T) intaketest.Start {
			return func(store peonify.Enqueuer) (intaketest.Send, func()) {
				srv := httptest.NewServer(newHandler(t, store, Config{}))
				var once sync.Once
				stop := func() { once.Do(srv.Close) }
				t.Cleanup(stop)
				send := func(id string, payload []byte) intaketest.Answer {
					switch a := post(t, srv.Client(), srv.URL, githubRequest(id, payload)); a.status {
					case http.StatusAccepted, http.StatusOK:
						return intaketest.Accepted
					case http.StatusServiceUnavailable:
						return intaketest.Retry
					default:
						return intaketest.Refused
					}
				}
				return send, stop
			}
		},
	})
}
