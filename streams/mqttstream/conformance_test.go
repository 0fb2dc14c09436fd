package mqttstream

import (
	"path/filepath"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

// The Intake keeps the promises of every intake, over a real store and
// the test broker. Its sender is the broker: a message is acknowledged to
// it only once stored, and a store error leaves the message
// unacknowledged while the intake retries (Stats.StoreErrors tells the
// test so, the broker hears nothing); a message published again with the
// same ID is recognised, also after the task ran and after a restart
// (with a ResendLog).
func TestConformance(t *testing.T) {
	intaketest.Run(t, intaketest.Driver{
		ResendWindow: true,
		New: func(t *testing.T) intaketest.Start {
			url := broker(t)
			topic := testTopic(t)
			cfg := testConfig(t, url, map[string]string{topic: "t"})
			cfg.ResendLog = filepath.Join(t.TempDir(), "mqtt.resends")
			return func(store peonify.Enqueuer) (intaketest.Send, func()) {
				in, stop := start(t, store, cfg)
				send := func(id string, payload []byte) intaketest.Answer {
					before := in.Stats()
					publish(t, url, topic, payload, false, "-D", "publish", "user-property", IDProperty, id)
					var a intaketest.Answer
					intaketest.Eventually(t, "the intake stores the message or fails to", func() bool {
						st := in.Stats()
						switch {
						case st.Enqueued+st.Duplicates > before.Enqueued+before.Duplicates:
							a = intaketest.Accepted
						case st.StoreErrors > before.StoreErrors:
							a = intaketest.Retry
						case st.Dropped > before.Dropped:
							a = intaketest.Refused
						}
						return a != 0
					})
					return a
				}
				return send, stop
			}
		},
	})
}
