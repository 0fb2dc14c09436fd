// Package peonifytest is the conformance suite that every peonify.Stream
// passes. A stream author runs it from a test of the stream's package,
// against the real server the stream talks to (a database, a broker), never
// against a fake: the suite checks the broker's behaviour as much as the
// stream's code.
//
// TestStream runs each check as a parallel subtest with its own stream, so
// newStream must return a new, empty stream on an isolated queue (a unique
// table, stream or subject name) each time, and register its cleanup with
// t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		client := connect(t) // the real server; closed by t.Cleanup
//		peonifytest.TestStream(t, func(t *testing.T) peonify.Stream {
//			s, err := mystream.New(client, mystream.Config{
//				Queue: "conformance-" + peonify.NewID(), // isolated per subtest
//				Lease: 500 * time.Millisecond,
//			})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close(context.Background()) })
//			return s
//		}, peonifytest.Features{Lease: 500 * time.Millisecond})
//	}
//
// Configure the stream with a short lease (300ms to 1s) and report it in
// Features.Lease: the expiry checks wait for it. Features also says how to
// enqueue into a stream that does not implement peonify.Enqueuer, and what
// the stream cannot do (scheduling, priorities, headers, duplicate
// detection, large payloads); checks that need a missing capability, or an
// optional interface the stream does not implement (peonify.Extender,
// peonify.Inspector, peonify.Waker, peonify.Starter), are skipped with a
// message saying why. The suite finds them with peonify.As, so a stream
// behind a wrapper with an Unwrap method is tested as the stream it wraps.
// A stream whose server cannot answer some Inspector calls lists them in
// Features.InspectorUnsupported: the suite then accepts
// errors.ErrUnsupported from those calls, checks that they do return it,
// and fails on it from any other.
//
// The suite checks, among other things: byte-exact round trips of binary,
// empty and large payloads; that Poll never returns more than asked, and
// that a Poll for fewer than one task claims nothing and is no error; that
// leased tasks are invisible and come back when the lease ends; that Ack,
// Nack and Extend are fenced against stale claims; the three Nack outcomes;
// scheduling, priorities and duplicate detection; and, last, a real
// peonify.Processor processing tasks from the stream and shutting down
// cleanly.
//
// This package imports only the standard library and peonify.
package peonifytest
