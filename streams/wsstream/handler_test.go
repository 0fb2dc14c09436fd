package wsstream

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

func TestOriginAllowList(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{OriginPatterns: []string{"app.example.com", "*.trusted.example"}})

	for _, origin := range []string{"https://evil.example", "https://app.example.com.evil.example", "null"} {
		_, err := Dial(context.Background(), url, DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		var he *HandshakeError
		if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden {
			t.Errorf("origin %s: Dial error = %v, want a 403 HandshakeError", origin, err)
		}
	}
	for _, origin := range []string{"https://app.example.com", "https://x.trusted.example", ""} {
		c := dial(t, url, DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		if err := c.Send(context.Background(), &peonify.Task{Type: "ok"}); err != nil {
			t.Errorf("origin %q: %v", origin, err)
		}
	}
	if n := intaketest.Total(t, store); n != 3 {
		t.Fatalf("store holds %d tasks, want 3 (one per allowed origin, none from refused ones)", n)
	}
}

func TestAuthenticate(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{Authenticate: func(r *http.Request) error {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			return errors.New("missing or wrong bearer token")
		}
		return nil
	}})

	_, err := Dial(context.Background(), url, DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer wrong"}}})
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Dial with a wrong token: %v, want a 401 HandshakeError", err)
	}
	if !strings.Contains(err.Error(), "wrong bearer token") {
		t.Errorf("error %q does not carry the hook's reason", err)
	}

	c := dial(t, url, DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer s3cret"}}})
	if err := c.Send(context.Background(), &peonify.Task{ID: "a1", Type: "ok"}); err != nil {
		t.Fatal(err)
	}
	if intaketest.Stored(t, store, "a1") == nil {
		t.Fatal("acked task is not in the store")
	}
}

func TestOversizeMessageClosesWith1009(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{ReadLimit: 1024})
	c := dialRaw(t, url, nil)

	c.send(`{"id":"small","type":"t","payload":"fits"}`)
	c.want(`{"ack":"small"}`)
	c.send(`{"id":"big","type":"t","payload":"` + strings.Repeat("x", 2000) + `"}`)
	_, err := c.next()
	if st := websocket.CloseStatus(err); st != websocket.StatusMessageTooBig {
		t.Fatalf("after an oversize message: %v (status %d), want close status 1009", err, st)
	}
	if intaketest.Stored(t, store, "big") != nil || intaketest.Total(t, store) != 1 {
		t.Fatalf("the oversize message was enqueued (store holds %d tasks)", intaketest.Total(t, store))
	}
}

func TestInvalidMessagesAreNacked(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)

	for _, tc := range []struct{ msg, answer string }{
		{`{not json`, `{"nack":"","error":"message is not a task object: JSON syntax error at byte 2: invalid character 'n' looking for beginning of object key string"}`},
		{`[1,2]`, `{"nack":"","error":"message is not a task object: want a JSON object, got array"}`},
		{`{"type":"t"}`, `{"nack":"","error":"message has no \"id\": give every task a unique id, the key that makes resending safe"}`},
		{`{"id":"n1"}`, `{"nack":"n1","error":"message has no \"type\": name a task type the processor handles"}`},
		{`{"id":"n2","type":"t","payload":1,"payload_b64":"AA=="}`, `{"nack":"n2","error":"message has both \"payload\" and \"payload_b64\": send one of them"}`},
		{`{"id":"n3","type":"t","payload_b64":"%%"}`, `{"nack":"n3","error":"\"payload_b64\" is not standard base64 (RFC 4648, with padding): illegal base64 data at input byte 0"}`},
		{`{"id":"n4","type":"t","colour":"red"}`, `{"nack":"n4","error":"message is not a task object: json: unknown field \"colour\""}`},
		{`{"id":"n5","type":"t","max_attempts":-1}`, `{"nack":"n5","error":"task MaxAttempts is negative: use 0 for the processor's default"}`},
		{`{"id":"n6","type":"t"} {"id":"n7","type":"t"}`, `{"nack":"n6","error":"message has data after its JSON object: send one task per message"}`},
		{`{"id":"n8","type":"t","headers":{"a":1}}`, `{"nack":"n8","error":"message is not a task object: field \"headers\" must not be a number"}`},
		{"{\"id\":\"n9\",\"type\":\"\xff\"}", `{"nack":"","error":"message is not valid UTF-8: send JSON text, and binary payloads in payload_b64"}`},
		{`{"id":"n10","type":"t","key":"` + strings.Repeat("k", peonify.MaxKeyLen+1) + `"}`, `{"nack":"n10","error":"\"key\": the key is 256 bytes, longer than 255: use a shorter identifier of what the task belongs to (a tenant or account ID)"}`},
		{`{"id":"n11","type":"t","key":"acme","headers":{"peonify-key":"globex"}}`, `{"nack":"n11","error":"\"key\": the key is given twice, with different values: \"acme\", and \"globex\" in the peonify-key header: give it once"}`},
	} {
		c.send(tc.msg)
		c.want(tc.answer)
	}
	// The connection still works, and nothing invalid was stored.
	c.send(`{"id":"good","type":"t"}`)
	c.want(`{"ack":"good"}`)
	if n := intaketest.Total(t, store); n != 1 {
		t.Fatalf("store holds %d tasks, want 1", n)
	}
}

func TestMessageFieldsReachTheStore(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)

	c.send(`{"id":"f1","type":"report","payload":{ "b" : [1, 2] },"headers":{"tenant":"acme"},"priority":5,"max_attempts":3,"run_at":"2030-01-02T03:04:05Z","unique_key":"r:1","key":"acme-corp"}`)
	c.want(`{"ack":"f1"}`)
	c.send(`{"id":"f3","type":"report","headers":{"tenant":"globex","Peonify-Key":"globex-inc"}}`)
	c.want(`{"ack":"f3"}`)
	c.send(`{"id":"f2","type":"blob","payload_b64":"AAH/"}`)
	c.want(`{"ack":"f2"}`)

	got := intaketest.Stored(t, store, "f1")
	switch {
	case got == nil:
		t.Fatal("f1 not stored")
	case got.Type != "report" || string(got.Payload) != `{ "b" : [1, 2] }` || got.Headers["tenant"] != "acme" ||
		got.Priority != 5 || got.MaxAttempts != 3 || got.UniqueKey != "r:1" || got.Key != "acme-corp" ||
		!got.RunAt.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)):
		t.Fatalf("f1 stored as %+v", got)
	}
	// The peonify-key header of a producer that sets headers only is the key, not a header.
	if got := intaketest.Stored(t, store, "f3"); got == nil || got.Key != "globex-inc" || len(got.Headers) != 1 || got.Headers["tenant"] != "globex" {
		t.Fatalf("f3 stored as %+v, want Key globex-inc and the tenant header only", got)
	}
	if got := intaketest.Stored(t, store, "f2"); got == nil || string(got.Payload) != "\x00\x01\xff" {
		t.Fatalf("f2 stored as %+v, want payload 00 01 ff", got)
	}
}

func TestDuplicateIsAcked(t *testing.T) {
	store := intaketest.NewMem(t)
	_, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)
	for range 3 {
		c.send(`{"id":"d1","type":"t","payload":1}`)
		c.want(`{"ack":"d1"}`)
	}
	if n := intaketest.Total(t, store); n != 1 {
		t.Fatalf("store holds %d tasks, want 1", n)
	}
}

func TestStoreFailureIsRetryableNack(t *testing.T) {
	store := &intaketest.FaultStore{Enqueuer: intaketest.NewMem(t)}
	store.Refuse(1, nil)
	_, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)

	c.send(`{"id":"s1","type":"t"}`)
	c.want(`{"nack":"s1","error":"task not stored: the store is unavailable; send it again later","retryable":true}`)
	c.send(`{"id":"s1","type":"t"}`)
	c.want(`{"ack":"s1"}`)

	// A task the store calls invalid is refused for good.
	store.Refuse(1, &peonify.InvalidTaskError{ID: "s2", Reason: "header is not UTF-8"})
	c.send(`{"id":"s2","type":"t"}`)
	c.want(`{"nack":"s2","error":"peonify: invalid task s2: header is not UTF-8"}`)
}

// A batch in which the store refuses one task still stores and acks the
// others.
func TestRefusedTaskDoesNotFailItsBatch(t *testing.T) {
	mem := intaketest.NewMem(t)
	store := intaketest.Holding(mem)
	store.RefuseID("b1")
	h, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)

	c.send(`{"id":"b0","type":"t"}`)
	store.Held(t) // b0 alone, held while the next ones queue up
	for _, id := range []string{"b1", "b2", "b3"} {
		c.send(`{"id":"` + id + `","type":"t"}`)
	}
	intaketest.Eventually(t, "the server has read the three messages", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for sc := range h.conns {
			return len(sc.in) == 3
		}
		return false
	})
	store.Release()
	c.want(`{"ack":"b0"}`)
	c.want(`{"nack":"b1","error":"peonify: invalid task b1: refused"}`)
	c.want(`{"ack":"b2"}`)
	c.want(`{"ack":"b3"}`)
	if ids := store.Held(t); len(ids) != 3 {
		t.Fatalf("the second Enqueue carried %v, want the three waiting tasks in one batch", ids)
	}
	if n := intaketest.Total(t, mem); n != 3 {
		t.Fatalf("store holds %d tasks, want b0, b2 and b3", n)
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	mem := intaketest.NewMem(t)
	store := intaketest.Holding(mem)
	h, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)

	// A message being stored when Shutdown starts is still answered.
	c.send(`{"id":"g1","type":"t"}`)
	store.Held(t)
	shut := make(chan error, 1)
	go func() { shut <- h.Shutdown(context.Background()) }()
	intaketest.Eventually(t, "new handshakes are refused", func() bool {
		_, resp, err := websocket.Dial(context.Background(), url, nil)
		return err != nil && resp != nil && resp.StatusCode == http.StatusServiceUnavailable
	})
	store.Release()
	c.want(`{"ack":"g1"}`)
	_, err := c.next()
	if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
		t.Fatalf("connection ended with %v (status %d), want 1001", err, st)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDeadlineAbortsEnqueues(t *testing.T) {
	store := intaketest.Holding(intaketest.NewMem(t))
	h, url := serve(t, store, Config{})
	c := dialRaw(t, url, nil)
	c.send(`{"id":"h1","type":"t"}`)
	store.Held(t) // never released

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline error", err)
	}
	// The client may see a retryable nack before the connection ends.
	for {
		a, err := c.next()
		if err != nil {
			break
		}
		if want := `{"nack":"h1","error":"task not stored: the store is unavailable; send it again later","retryable":true}`; a != want {
			t.Fatalf("answer after Shutdown = %s, want none or %s", a, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	store := intaketest.NewMem(t)
	for _, cfg := range []Config{{ReadLimit: -1}, {MaxInFlight: -1}, {OriginPatterns: []string{"*"}}, {EnqueueTimeout: -1}} {
		if _, err := New(store, cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil store) succeeded")
	}
}
