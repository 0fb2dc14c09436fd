package natsstream

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestPlainNATSProducer publishes tasks the way README.md tells producers
// in other languages to, with nothing but a NATS client, and checks what
// the stream makes of them.
func TestPlainNATSProducer(t *testing.T) {
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{AckWait: 5 * time.Second})
	ctx := streamtest.Context(t)
	nc := js.Conn()
	wake := s.Wake()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}

	publish := func(h map[string]string, body string) {
		t.Helper()
		m := nats.NewMsg(cfg.Subject)
		for k, v := range h {
			m.Header.Set(k, v)
		}
		m.Data = []byte(body)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish(map[string]string{"Nats-Msg-Id": "order-1", "Peonify-Type": "send-email", "traceparent": "00-abc-01", "Tenant": "acme"}, `{"to":"a@example.com"}`)
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatal("a task published with plain NATS did not wake the stream")
	}
	d := streamtest.PollUntil(t, s, 10, 5*time.Second)[0]
	want := map[string]string{"traceparent": "00-abc-01", "Tenant": "acme"}
	switch tk := d.Task; {
	case tk.ID != "order-1" || tk.Type != "send-email" || string(tk.Payload) != `{"to":"a@example.com"}`:
		t.Errorf("got task %q of type %q with payload %q", tk.ID, tk.Type, tk.Payload)
	case len(tk.Headers) != 2 || tk.Headers["traceparent"] != want["traceparent"] || tk.Headers["Tenant"] != want["Tenant"]:
		t.Errorf("got headers %q, want %q", tk.Headers, want)
	case tk.Attempt != 1 || tk.EnqueuedAt.IsZero():
		t.Errorf("got Attempt %d and EnqueuedAt %s, want 1 and the time the message was stored", tk.Attempt, tk.EnqueuedAt)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}

	// A duplicate Nats-Msg-Id is dropped by the server.
	publish(map[string]string{"Nats-Msg-Id": "order-1", "Peonify-Type": "send-email"}, "again")

	// A scheduled task, without an ID: Poll holds it in the scheduler until
	// its time, without counting an attempt.
	runAt := time.Now().Add(300 * time.Millisecond)
	publish(map[string]string{"Peonify-Type": "later", "Peonify-Run-At": runAt.Format(time.RFC3339Nano)}, "")
	d = streamtest.PollUntil(t, s, 10, 5*time.Second)[0]
	if time.Now().Before(runAt) {
		t.Errorf("a task due at %s was delivered at %s", runAt.Format(time.StampMilli), time.Now().Format(time.StampMilli))
	}
	if d.Task.Type != "later" || d.Task.Attempt != 1 || !strings.HasPrefix(d.Task.ID, "seq-") {
		t.Errorf("scheduled task: got type %q, Attempt %d, ID %q; want later, 1 and an ID from its sequence", d.Task.Type, d.Task.Attempt, d.Task.ID)
	}
	if err := s.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}

	// A message without a type is dead-lettered, with the reason.
	publish(map[string]string{"Nats-Msg-Id": "no-type"}, "?")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ds, err := s.Poll(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) > 0 {
			t.Fatalf("a message without a type was delivered: %+v", ds[0].Task)
		}
		info, err := s.Get(ctx, "no-type")
		if err == nil && info.State == peonify.StateDead {
			if !strings.Contains(info.LastError, HeaderType) {
				t.Errorf("dead reason %q does not name the missing header", info.LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message without a type was not dead-lettered: Get = %+v, %v", info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestJetStreamDoesNotFenceAcks records the server behaviour that the
// stream's own fencing exists for: an acknowledgement sent on the reply
// subject of an expired delivery acknowledges the message's newer
// delivery. If this test fails, the server fences acknowledgements and
// README.md's section on fencing should say so.
func TestJetStreamDoesNotFenceAcks(t *testing.T) {
	js := testJS(t)
	_, cfg := newTestStream(t, js, Config{AckWait: 200 * time.Millisecond})
	ctx := streamtest.Context(t)
	if _, err := js.Publish(ctx, cfg.Subject, nil, jetstream.WithMsgID("fence")); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func() jetstream.Msg {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			b, err := cons.FetchNoWait(1)
			if err != nil {
				t.Fatal(err)
			}
			for m := range b.Messages() {
				return m
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no delivery")
		return nil
	}
	first := fetch()
	second := fetch() // after the first delivery's AckWait
	if md, _ := second.Metadata(); md.NumDelivered != 2 {
		t.Fatalf("second delivery has NumDelivered %d, want 2", md.NumDelivered)
	}
	if _, err := js.Conn().Request(first.Reply(), ackAck, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("the server kept the message after a stale ack (%d left): it now fences acknowledgements; update README.md", n)
	}
}

// TestStaleAckIsNotSent checks the stream's fence: once a claim's lease
// has run out, Ack, Nack and Extend report ErrLeaseLost and leave the
// message to be delivered again, even before anyone claimed it again.
func TestStaleAckIsNotSent(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{AckWait: 200 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "stale", Type: "t"})
	d := streamtest.PollUntil(t, s, 1, 5*time.Second)[0]
	time.Sleep(time.Until(d.Deadline))
	if err := s.Ack(ctx, d); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Ack after the lease: %v, want ErrLeaseLost", err)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead}); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Nack after the lease: %v, want ErrLeaseLost", err)
	}
	if _, err := s.Extend(ctx, d, time.Second); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Errorf("Extend after the lease: %v, want ErrLeaseLost", err)
	}
	d2 := streamtest.PollUntil(t, s, 1, 5*time.Second)[0]
	if d2.Task.ID != "stale" || d2.Task.Attempt != 2 {
		t.Fatalf("got %s attempt %d, want the task again as attempt 2", d2.Task.ID, d2.Task.Attempt)
	}
	if err := s.Ack(ctx, d2); err != nil {
		t.Fatal(err)
	}
}

// TestAttemptsAcrossOutcomes follows one task through an expired lease, a
// release, a failure and death, checking the attempt count and the
// headers of the dead letter.
func TestAttemptsAcrossOutcomes(t *testing.T) {
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{AckWait: 300 * time.Millisecond})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "a1", Type: "t", Payload: []byte("p"), Headers: map[string]string{"k": "v"}})

	d := streamtest.PollUntil(t, s, 1, 5*time.Second)[0] // attempt 1; let its lease run out
	d = streamtest.PollUntil(t, s, 1, 5*time.Second)[0]
	// Normally 2. The server also counts a delivery to a Poll that gave up
	// on its request (README.md, "Counting attempts"), which a loaded
	// machine can make happen; what follows is counted from here.
	expired := d.Task.Attempt
	if expired < 2 {
		t.Fatalf("after an expired lease: Attempt %d, want 2", expired)
	} else if expired > 2 {
		t.Logf("after an expired lease: Attempt %d: the server counted a delivery no Poll saw", expired)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeReleased}); err != nil {
		t.Fatal(err)
	}
	d = streamtest.PollUntil(t, s, 1, 5*time.Second)[0]
	if d.Task.Attempt != expired {
		t.Fatalf("after a release: Attempt %d, want %d", d.Task.Attempt, expired)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeFailed, Reason: "line one\nline two"}); err != nil {
		t.Fatal(err)
	}
	d = streamtest.PollUntil(t, s, 1, 5*time.Second)[0]
	if d.Task.Attempt != expired+1 || d.Task.LastError != "line one line two" {
		t.Fatalf("after a failure: Attempt %d, LastError %q; want %d and the reason on one line", d.Task.Attempt, d.Task.LastError, expired+1)
	}
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "poison"}); err != nil {
		t.Fatal(err)
	}

	dead, err := js.Stream(ctx, cfg.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := dead.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		HeaderID: "a1", HeaderType: "t", HeaderAttempts: strconv.Itoa(expired + 1), HeaderDeadReason: "poison",
		HeaderLastError: "line one line two", "k": "v",
	} {
		if got := rm.Header.Get(k); got != want {
			t.Errorf("dead letter header %s = %q, want %q", k, got, want)
		}
	}
	if rm.Header.Get(HeaderDeadAt) == "" || string(rm.Data) != "p" {
		t.Errorf("dead letter: %s %q, payload %q", HeaderDeadAt, rm.Header.Get(HeaderDeadAt), rm.Data)
	}
	info, err := s.Get(ctx, "a1")
	if err != nil || info.State != peonify.StateDead || info.Attempts != expired+1 || info.LastError != "poison" {
		t.Errorf("Get = %+v, %v; want dead after %d attempts with reason poison", info, err, expired+1)
	}
}

// TestMaxDeliver checks that a task whose every claim ends without an
// outcome, as when it crashes its processor, is dead-lettered by Poll once
// it has had Config.MaxDeliver attempts.
func TestMaxDeliver(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{AckWait: 100 * time.Millisecond, MaxDeliver: 2})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{ID: "crashy", Type: "t"})
	// Normally attempts 1 and 2 are delivered, then the task is dead. The
	// server also counts a delivery to a Poll that gave up on its request
	// (README.md, "Counting attempts"), so on a loaded machine one of them
	// may not be seen; none may be delivered past MaxDeliver.
	seen := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, err := s.Poll(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) > 0 {
			seen++
			if a := ds[0].Task.Attempt; a > 2 || a < seen {
				t.Fatalf("delivery %d has Attempt %d, with MaxDeliver 2", seen, a)
			}
			continue // let its lease run out
		}
		if info, err := s.Get(ctx, "crashy"); err == nil && info.State == peonify.StateDead {
			if info.Attempts != 2 || !strings.Contains(info.LastError, "MaxDeliver") {
				t.Errorf("dead task: Attempts %d, reason %q", info.Attempts, info.LastError)
			}
			if seen == 0 {
				t.Error("the task went dead without being delivered once")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task was not dead-lettered (%d deliveries seen)", seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEnqueueRejects checks that tasks NATS cannot carry unchanged are
// refused before anything is stored.
func TestEnqueueRejects(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{})
	ctx := streamtest.Context(t)
	good := &peonify.Task{Type: "t"}
	for name, bad := range map[string]*peonify.Task{
		"reserved header":    {Type: "t", Headers: map[string]string{"Nats-Expected-Stream": "x"}},
		"peonify header":     {Type: "t", Headers: map[string]string{"peonify-type": "x"}},
		"colon in name":      {Type: "t", Headers: map[string]string{"a:b": "x"}},
		"space in name":      {Type: "t", Headers: map[string]string{"a b": "x"}},
		"line break":         {Type: "t", Headers: map[string]string{"k": "a\r\nb"}},
		"leading space":      {Type: "t", Headers: map[string]string{"k": " a"}},
		"trailing tab":       {Type: "t", Headers: map[string]string{"k": "a\t"}},
		"line break in ID":   {ID: "a\nb", Type: "t"},
		"line break in type": {Type: "a\nb"},
		"too large":          {Type: "t", Payload: make([]byte, js.Conn().MaxPayload()+1)},
	} {
		err := s.Enqueue(ctx, good.Clone(), bad)
		var ie *peonify.InvalidTaskError
		if !errors.As(err, &ie) {
			t.Errorf("%s: Enqueue returned %v, want an InvalidTaskError", name, err)
		}
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[peonify.StatePending] != 0 {
		t.Errorf("rejected Enqueues stored %d tasks", counts[peonify.StatePending])
	}
}

// TestConfigErrors checks that New and Setup refuse bad configurations
// with a ConfigError naming the field.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{Stream: "a.b"}, "Stream"},
		{Config{Consumer: "a b"}, "Consumer"},
		{Config{Subject: "a.*"}, "Subject"},
		{Config{Subject: "a..b"}, "Subject"},
		{Config{Subject: "_peonify.x"}, "Subject"},
		{Config{AckWait: time.Millisecond}, "AckWait"},
		{Config{Stream: "S", DeadStream: "S"}, "DeadStream"},
		{Config{Replicas: 7}, "Replicas"},
	} {
		_, err := New(fakeJS{}, c.cfg)
		var ce *peonify.ConfigError
		if !errors.As(err, &ce) || !strings.HasSuffix(ce.Field, "."+c.field) {
			t.Errorf("New(%+v) = %v, want a ConfigError for %s", c.cfg, err, c.field)
		}
		if err := Setup(context.Background(), fakeJS{}, c.cfg); !errors.As(err, &ce) {
			t.Errorf("Setup(%+v) = %v, want a ConfigError", c.cfg, err)
		}
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil) returned no error")
	}
}

// fakeJS satisfies jetstream.JetStream for the checks that fail before
// any call to the server; calling it panics.
type fakeJS struct{ jetstream.JetStream }

func (fakeJS) Conn() *nats.Conn { return nil }

// TestExpiredClaimsAreForgotten checks that the stream's record of the
// claims it holds does not keep those that ended without an outcome.
func TestExpiredClaimsAreForgotten(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{AckWait: 100 * time.Millisecond})
	streamtest.Enqueue(t, s, &peonify.Task{Type: "t"}, &peonify.Task{Type: "t"})
	ds := streamtest.PollUntil(t, s, 2, 5*time.Second)
	held := s.claims.len
	if n := held(); n != len(ds) {
		t.Fatalf("the stream records %d claims after delivering %d", n, len(ds))
	}
	time.Sleep(time.Until(ds[0].Deadline))
	if err := s.Ack(streamtest.Context(t), ds[0]); !errors.Is(err, peonify.ErrLeaseLost) {
		t.Fatalf("Ack after the lease: %v", err)
	}
	time.Sleep(time.Until(ds[len(ds)-1].Deadline))
	s.forgetExpired()
	if n := held(); n != 0 {
		t.Errorf("the stream still records %d claims whose lease ended", n)
	}
}

// TestMaxAckPending checks the consumer's cap on claims, and that Poll
// leaves no pull request waiting on the server when it returns, whether
// it filled the cap or found it full. A request left behind (as
// nats.go's FetchNoWait leaves one, for a second after it gave up) takes
// the task that an ack frees to a reply subject nobody reads: the task
// is then stranded until its AckWait ends, and Poll finds nothing.
func TestMaxAckPending(t *testing.T) {
	js := testJS(t)
	s, cfg := newTestStream(t, js, Config{MaxAckPending: 2})
	ctx := streamtest.Context(t)
	cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	noneWaiting := func(after string) {
		t.Helper()
		ci, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ci.NumWaiting != 0 {
			t.Errorf("%d pull request(s) still wait on the server after %s, want none", ci.NumWaiting, after)
		}
	}
	streamtest.Enqueue(t, s, &peonify.Task{Type: "t"}, &peonify.Task{Type: "t"}, &peonify.Task{Type: "t"})
	ds := streamtest.PollUntil(t, s, 10, 5*time.Second)
	if len(ds) != 2 {
		t.Fatalf("first Poll claimed %d tasks, want the cap of 2", len(ds))
	}
	noneWaiting("a Poll that reached the cap")
	start := time.Now()
	if more, err := s.Poll(ctx, 10); err != nil || len(more) != 0 {
		t.Fatalf("Poll at the cap = %d tasks, %v; want none and no error", len(more), err)
	}
	if took := time.Since(start); took >= fetchNoReply {
		t.Errorf("Poll at the cap took %s: the server did not end the request, and Poll gave up on it", took)
	}
	noneWaiting("a Poll at the cap")
	if err := s.Ack(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	d := streamtest.PollUntil(t, s, 10, 5*time.Second)
	if len(d) != 1 || d[0].Task.Attempt != 1 {
		t.Fatalf("after the acks, Poll returned %d tasks (first attempt %d), want the third task as attempt 1", len(d), d[0].Task.Attempt)
	}
}

// TestPollAtCapTakesFreedTask frees a claim at different moments of a
// Poll made at the consumer's MaxAckPending: the task waiting behind the
// cap goes to that Poll or to the next, as its first attempt, and is
// never stranded on a request nobody reads.
func TestPollAtCapTakesFreedTask(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{MaxAckPending: 1})
	ctx := streamtest.Context(t)
	streamtest.Enqueue(t, s, &peonify.Task{Type: "t"})
	held := streamtest.PollUntil(t, s, 10, 5*time.Second)
	for i := range 8 {
		streamtest.Enqueue(t, s, &peonify.Task{Type: "t"})
		type result struct {
			ds  []peonify.Delivery
			err error
		}
		polled := make(chan result, 1)
		go func() {
			ds, err := s.Poll(ctx, 10)
			polled <- result{ds, err}
		}()
		// From before the request reaches the server to after it expired.
		time.Sleep(time.Duration(i) * fetchExpires / 4)
		if err := s.Ack(ctx, held...); err != nil {
			t.Fatal(err)
		}
		r := <-polled
		if r.err != nil {
			t.Fatal(r.err)
		}
		got := r.ds
		if len(got) == 0 {
			got = streamtest.PollUntil(t, s, 10, 5*time.Second)
		}
		if len(got) != 1 || got[0].Task.Attempt != 1 {
			t.Fatalf("ack %d/4 of fetchExpires into the Poll: got %d tasks (first attempt %d), want the freed one as attempt 1",
				i, len(got), got[0].Task.Attempt)
		}
		held = got
	}
}

// TestEnqueueNoStream checks what Enqueue says when no stream answers on
// the subject: not set up, or, in a JetStream cluster, a stream electing
// a leader after its leader's node failed (chaostest's leaderfail cell
// sees that one), which takes no Setup, only a retry.
func TestEnqueueNoStream(t *testing.T) {
	s, err := New(testJS(t), uniqueConfig(t, Config{}))
	if err != nil {
		t.Fatal(err)
	}
	streamtest.CloseAtEnd(t, s)
	err = s.Enqueue(streamtest.Context(t), &peonify.Task{Type: "x"}, &peonify.Task{Type: "x"})
	if err == nil {
		t.Fatal("Enqueue to a stream that was never set up returned nil")
	}
	for _, want := range []string{"run natsstream.Setup", "electing a leader", "enqueue again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Enqueue's error %q does not say %q", err, want)
		}
	}
}
