package natsstream

import (
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
)

// TestConformance runs the public stream suite against the real server, a
// new JetStream stream per check. JetStream delivers in the order of
// storage and deduplicates IDs only, so priorities and unique keys are not
// checked.
func TestConformance(t *testing.T) {
	js := testJS(t)
	const lease = time.Second
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		s, _ := newTestStream(t, js, Config{AckWait: lease})
		return s
	}, features(lease))
}
