package amqpstream

import (
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/peonifytest"
)

// conformanceFeatures is what the suite should expect of the stream.
// Claims never expire (the broker holds an unacknowledged message until
// its channel closes), so Lease is 0; RabbitMQ cannot detect duplicates;
// a plain work queue is FIFO. The Inspector sees dead tasks only: it
// cannot list the other states, nor find a task that is not dead by ID
// (nor tell one from a task that is gone).
var conformanceFeatures = peonifytest.Features{
	NoDuplicateCheck: true,
	NoPriority:       true,
	// The broker decides delivery, so the stream cannot enforce limits
	// in its claim (see the package's Flow control section).
	NoLimiter: true,
	NoTracker: true, NoWorkflows: true, // RabbitMQ forgets an acked message: no results, cancellation or workflows
	InspectorUnsupported: []peonifytest.InspectCall{
		"List(pending)", "List(scheduled)", "List(running)",
		"Get(pending)", "Get(scheduled)", "Get(running)", "Get(done)",
		"Delete(pending)", "Delete(scheduled)", "Delete(running)", "Delete(done)",
	},
}

// TestConformance runs the public stream suite against the real broker,
// each check on its own queue.
func TestConformance(t *testing.T) {
	testURL(t)
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		return newTestStream(t, Config{})
	}, conformanceFeatures)
}

// TestConformanceQuorum runs the suite on quorum queues.
func TestConformanceQuorum(t *testing.T) {
	testURL(t)
	peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
		return newTestStream(t, Config{Quorum: true})
	}, conformanceFeatures)
}
