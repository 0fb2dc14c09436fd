package mqttstream

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/streams/memstream"
)

// Messages published with mosquitto_pub become tasks in a SQLite store,
// which a Processor then runs: payload bytes exact, user properties as
// headers, IDs from the "id" property or the correlation data.
func TestMessagesBecomeTasks(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	store := intaketest.OpenSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
	cfg := testConfig(t, url, map[string]string{topic + "/email": "email", topic + "/sms/+": "sms"})
	in, stop := start(t, store, cfg)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	publish(t, url, topic+"/email", []byte(`{"to": "ada@example.com"}`), false,
		"-D", "publish", "user-property", "id", "mail-1",
		"-D", "publish", "user-property", "tenant", "acme",
		"-D", "publish", "content-type", "application/json")
	publish(t, url, topic+"/sms/44", binary, false, "-D", "publish", "correlation-data", "corr-7")
	publish(t, url, topic+"/sms/45", []byte("hello"), false)
	publish(t, url, topic+"/other", []byte("not routed"), false) // not subscribed

	var (
		mu   sync.Mutex
		ran  = make(map[string]*peonify.Task)
		done = make(chan struct{})
	)
	p, err := peonify.New(peonify.Config{Workers: 2, Logger: intaketest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	record := peonify.HandlerFunc(func(_ context.Context, tk *peonify.Task) error {
		mu.Lock()
		defer mu.Unlock()
		ran[tk.ID] = tk.Clone()
		if len(ran) == 3 {
			close(done)
		}
		return nil
	})
	if err := p.AddTaskList(peonify.TaskList{"email": record, "sms": record}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(store); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the processor did not run the 3 tasks within 15s")
	}
	stop() // the intake before the store, which Run closes
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	mail := ran["mail-1"]
	switch {
	case mail == nil:
		t.Fatalf("no task mail-1; ran %v", keys(ran))
	case mail.Type != "email" || string(mail.Payload) != `{"to": "ada@example.com"}` ||
		mail.Headers["tenant"] != "acme" || mail.Headers[HeaderContentType] != "application/json" ||
		mail.Headers[HeaderTopic] != topic+"/email" || mail.Headers[IDProperty] != "mail-1":
		t.Errorf("mail-1 ran as %+v", mail)
	}
	if sms := ran["corr-7"]; sms == nil || sms.Type != "sms" || string(sms.Payload) != string(binary) || sms.Headers[HeaderTopic] != topic+"/sms/44" {
		t.Errorf("corr-7 ran as %+v", sms)
	}
	for id, tk := range ran {
		if id != "mail-1" && id != "corr-7" && (len(id) != 36 || string(tk.Payload) != "hello") {
			t.Errorf("third task ran as %+v, want a new UUID and payload hello", tk)
		}
	}
	if st := in.Stats(); st.Received != 3 || st.Enqueued != 3 || st.Duplicates != 0 || st.Dropped != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// Every stored message is acknowledged before the intake disconnects: a
// new intake in the same session does not receive them again.
func TestAcknowledgedMessagesAreNotRedelivered(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	store := intaketest.NewMem(t)
	cfg := testConfig(t, url, map[string]string{topic + "/#": "t"})
	in, stop := start(t, store, cfg)
	publish(t, url, topic+"/a", []byte("m1\nm2\nm3\nm4\nm5"), true)
	intaketest.Eventually(t, "5 tasks are stored", func() bool { return in.Stats().Enqueued == 5 })
	stop()

	again, _ := start(t, store, cfg) // same ClientID: same session
	publish(t, url, topic+"/marker", []byte("marker"), false)
	intaketest.Eventually(t, "the marker arrives", func() bool { return len(all(t, store)) == 6 })
	if st := again.Stats(); st.Received != 1 {
		t.Fatalf("the second intake received %d messages, want only the marker: acknowledged ones came again", st.Received)
	}
}

// While the store refuses, the message is held unacknowledged and the
// Enqueue retried; it is stored once the store is back.
func TestStoreRefusalIsRetried(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	mem := intaketest.NewMem(t)
	store := &intaketest.FaultStore{Enqueuer: mem}
	store.Refuse(3, nil)
	in, _ := start(t, store, testConfig(t, url, map[string]string{topic: "t"}))
	publish(t, url, topic, []byte("r1\nr2"), true)
	intaketest.Eventually(t, "both messages are stored", func() bool { return len(all(t, mem)) == 2 })
	if st := in.Stats(); st.StoreErrors < 3 || st.Enqueued != 2 {
		t.Fatalf("stats = %+v, want at least 3 store errors and 2 tasks", st)
	}
}

// A message the store never took is not acknowledged: after the intake
// stops, the broker delivers it to the next intake in the session.
func TestUnstoredMessageIsRedelivered(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	store := &intaketest.FaultStore{Enqueuer: intaketest.NewMem(t)}
	store.Refuse(1<<40, nil)
	cfg := testConfig(t, url, map[string]string{topic: "t"})
	_, stop := start(t, store, cfg)
	publish(t, url, topic, []byte("keep me"), false, "-D", "publish", "user-property", "id", "u-1")
	intaketest.Eventually(t, "the store refused the message", func() bool { return store.Calls() >= 2 })
	stop()

	mem := intaketest.NewMem(t)
	start(t, mem, cfg)
	intaketest.Eventually(t, "the message is stored by the next intake", func() bool {
		tk, ok := all(t, mem)["u-1"]
		return ok && string(tk.Payload) == "keep me"
	})
}

// Messages published at QoS 1 while the intake is stopped wait in its
// session and arrive when it runs again with the same ClientID.
func TestPersistentSession(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	store := intaketest.NewMem(t)
	cfg := testConfig(t, url, map[string]string{topic + "/+": "t"})
	_, stop := start(t, store, cfg)
	stop()

	var lines []string
	for i := range 5 {
		lines = append(lines, fmt.Sprint("away-", i))
	}
	publish(t, url, topic+"/x", []byte(strings.Join(lines, "\n")), true)

	start(t, store, cfg)
	intaketest.Eventually(t, "the 5 messages published while away arrive", func() bool { return len(all(t, store)) == 5 })
	got := make(map[string]bool)
	for _, tk := range all(t, store) {
		got[string(tk.Payload)] = true
	}
	for _, l := range lines {
		if !got[l] {
			t.Errorf("message %q missing", l)
		}
	}
}

// Two intakes in one share group split the messages between them, and
// together store each one once.
func TestSharedSubscriptionSplitsMessages(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	group := unique("g")
	stores := []*memstream.Stream{intaketest.NewMem(t), intaketest.NewMem(t)}
	for _, s := range stores {
		cfg := testConfig(t, url, map[string]string{topic + "/jobs": "t"})
		cfg.ShareGroup = group
		start(t, s, cfg)
	}
	const n = 40
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprint("job-", i))
	}
	publish(t, url, topic+"/jobs", []byte(strings.Join(lines, "\n")), true)

	count := func() (int, int) {
		return len(all(t, stores[0])), len(all(t, stores[1]))
	}
	intaketest.Eventually(t, "all messages are stored", func() bool { a, b := count(); return a+b == n })
	a, b := count()
	if a == 0 || b == 0 {
		t.Fatalf("one intake got every message (%d and %d): the subscription is not shared", a, b)
	}
	seen := make(map[string]bool)
	for _, s := range stores {
		for _, tk := range all(t, s) {
			if seen[string(tk.Payload)] {
				t.Errorf("%s stored by both intakes", tk.Payload)
			}
			seen[string(tk.Payload)] = true
		}
	}
	t.Logf("split %d messages as %d and %d", n, a, b)
}

// With ContentIDs, a message without an ID that is delivered twice is
// stored once.
func TestContentIDs(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	store := intaketest.NewMem(t)
	cfg := testConfig(t, url, map[string]string{topic: "t"})
	cfg.ContentIDs = true
	in, _ := start(t, store, cfg)
	publish(t, url, topic, []byte("same\nsame\nother"), true)
	intaketest.Eventually(t, "three messages are handled", func() bool { st := in.Stats(); return st.Enqueued+st.Duplicates == 3 })
	if n := len(all(t, store)); n != 2 {
		t.Fatalf("store holds %d tasks, want 2", n)
	}
	if st := in.Stats(); st.Duplicates != 1 {
		t.Fatalf("stats = %+v, want 1 duplicate", st)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The peonify-key user property becomes Task.Key, and not a header; a
// message with a key longer than peonify.MaxKeyLen is acknowledged and
// dropped, since no retry could store it, without holding up the others.
func TestKeyUserProperty(t *testing.T) {
	url := broker(t)
	topic := testTopic(t)
	store := intaketest.NewMem(t)
	in, _ := start(t, store, testConfig(t, url, map[string]string{topic: "t"}))
	publish(t, url, topic, []byte("keyed"), false,
		"-D", "publish", "user-property", "id", "k1", "-D", "publish", "user-property", peonify.KeyHeader, "tenant-7")
	publish(t, url, topic, []byte("too long"), false,
		"-D", "publish", "user-property", "id", "k2", "-D", "publish", "user-property", peonify.KeyHeader, strings.Repeat("k", peonify.MaxKeyLen+1))
	publish(t, url, topic, []byte("plain"), false, "-D", "publish", "user-property", "id", "k3")
	intaketest.Eventually(t, "k3 is stored", func() bool { return intaketest.Stored(t, store, "k3") != nil })
	if tk := intaketest.Stored(t, store, "k1"); tk == nil || tk.Key != "tenant-7" || tk.Headers[peonify.KeyHeader] != "" {
		t.Errorf("k1 stored as %+v, want Key tenant-7 and no %s header", tk, peonify.KeyHeader)
	}
	if tk := intaketest.Stored(t, store, "k2"); tk != nil {
		t.Errorf("k2, with a key of %d bytes, was stored as %+v", peonify.MaxKeyLen+1, tk)
	}
	if tk := intaketest.Stored(t, store, "k3"); tk.Key != "" {
		t.Errorf("k3 stored with Key %q, want none", tk.Key)
	}
	if st := in.Stats(); st.Dropped != 1 || st.Enqueued != 2 {
		t.Errorf("stats = %+v, want 2 enqueued and 1 dropped", st)
	}
}
