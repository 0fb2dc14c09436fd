// Package streamkit holds the mechanics that the stream packages under
// streams/ share beyond the public contract, so that each is written once:
// the background goroutines a stream runs from its start to its Close
// (Group, after river's startstop services), the checks at the top of
// Poll, Nack and Extend (CheckPoll, CheckDelivery), and the reading of
// task headers stored as a JSON object (DecodeHeaders). Backoff and
// ID-ordered paging have packages of their own (internal/backoff,
// internal/listing).
package streamkit
