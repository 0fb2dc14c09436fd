package natsstream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Poll's pull requests. A pull request that the server cannot answer at
// once waits in the consumer until it is filled or expires, and a request
// without an expiry waits for ever: JetStream leaves a no-wait request
// unanswered while it has messages it may not deliver, which is the case
// while the consumer's MaxAckPending is reached. If the client gives up
// on such a request, the server still holds it, and when a claim is
// acknowledged it delivers the next message to it: to a reply subject
// that nobody reads any more, so the task is stranded until its AckWait
// ends, and that delivery counts against MaxDeliver. nats.go's
// FetchNoWait does just that: it sends no expiry, stops listening after a
// second, and unsubscribes only after handing back what it got, so a
// claim acknowledged right after Poll returned could be delivered into
// the void.
//
// So Poll sends its own request, no-wait with an expiry of fetchExpires,
// and reads the answer until the server ends the request: with the last
// message of the batch, with 404 (nothing to deliver), or with 408 (the
// expiry, or the end of what it could deliver). The server ends every
// request within fetchExpires of receiving it, so Poll never leaves one
// behind, and a Poll made while the cap is reached takes the messages
// that claims freed meanwhile. The price: the server holds a no-wait
// request with an expiry until then even on an empty consumer (it answers
// one without an expiry at once, but never at the cap), so an empty Poll
// takes fetchExpires rather than a round trip. Measured with nats-server
// 2.9.10, see TestMaxAckPending and README.md.
const (
	// fetchExpires is how long the server keeps a Poll's request open
	// when it has nothing to deliver at once: an empty consumer, or one
	// at its MaxAckPending. A message stored meanwhile is delivered at
	// once, ending the wait.
	fetchExpires = 10 * time.Millisecond

	// fetchNoReply is how long Poll waits for the server to end its
	// request. A live server ends it within fetchExpires; one that has
	// not after this long is slow or gone (see checkSilence).
	fetchNoReply = 900 * time.Millisecond

	// fetchTail is how long Poll waits for more messages once some have
	// come. In a cluster the consumer's leader delivers from its own
	// replica of the stream, which may not yet hold every message the
	// stream leader acknowledged; nats-server 2.9 then delivers what its
	// replica holds and ends the request without a word (no 408): Poll
	// waited fetchNoReply for a status that never came, while the leases
	// of the messages it had ran. The next Poll gets the rest (measured in
	// TestCluster/partialfetch).
	fetchTail = 200 * time.Millisecond
)

// nextSubject returns the subject of js's API that takes pull requests for
// the consumer, with js's API prefix or domain.
func nextSubject(js jetstream.JetStream, stream, consumer string) string {
	o := js.Options()
	prefix := jetstream.DefaultAPIPrefix
	switch {
	case o.Domain != "":
		prefix = "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		prefix = o.APIPrefix
		if !strings.HasSuffix(prefix, ".") {
			prefix += "."
		}
	}
	return prefix + "CONSUMER.MSG.NEXT." + stream + "." + consumer
}

// fetch asks the work consumer for up to n messages and returns those it
// delivers. answered reports that the server ended the request; when it
// did not within fetchNoReply (or before done), fetch gives up and the
// caller checks the connection. Once messages have come, a silence of
// fetchTail ends the request too. err is the server's refusal, such as a
// missing consumer.
func (s *Stream) fetch(n int, done <-chan struct{}) (msgs []*nats.Msg, answered bool, err error) {
	// Room for every message and the status that ends the request, so
	// that the client never drops one as a slow consumer.
	ch := make(chan *nats.Msg, n+2)
	inbox := s.nc.NewInbox()
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := fmt.Appendf(nil, `{"batch":%d,"no_wait":true,"expires":%d}`, n, fetchExpires.Nanoseconds())
	if err := s.nc.PublishRequest(s.subj.next, inbox, req); err != nil {
		return nil, false, err
	}
	timer := time.NewTimer(fetchNoReply)
	defer timer.Stop()
	for {
		select {
		case m := <-ch:
			if code, desc, ok := pullStatus(m); ok {
				switch code {
				case "100": // a heartbeat; Poll asks for none
					continue
				case "404", "408": // nothing (more) to deliver, or the expiry
					return msgs, true, nil
				case "503":
					return msgs, true, errors.New("no responders: the consumer does not exist: run natsstream.Setup with the same Config first")
				}
				return msgs, true, fmt.Errorf("the server refused the pull request: %s %s", code, desc)
			}
			msgs = append(msgs, m)
			if len(msgs) == n {
				return msgs, true, nil
			}
			timer.Reset(fetchTail) // Go 1.23 timers: no stale tick survives a Reset
		case <-timer.C:
			// Messages came and then silence: the server ended the
			// request (see fetchTail), on a connection that evidently works.
			return msgs, len(msgs) > 0, nil
		case <-done:
			return msgs, false, nil
		}
	}
}

// pullStatus reports whether m is a status message of the server about a
// pull request (it has no reply subject, and a Status header) rather than
// a delivered message (which always has one, to acknowledge it), and
// returns its code and description.
func pullStatus(m *nats.Msg) (code, desc string, ok bool) {
	if m.Reply != "" || len(m.Data) > 0 {
		return "", "", false
	}
	code = m.Header.Get("Status")
	if _, err := strconv.Atoi(code); err != nil {
		return "", "", false
	}
	return code, m.Header.Get("Description"), true
}
