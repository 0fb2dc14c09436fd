package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify/internal/testenv"
)

var brokerResultRE = regexp.MustCompile(`(?m)^RESULT backend=(\w+) peonify=\d+ peer=(asynq|raw):\d+ ratio=\d+\.\d\d$`)

// checkBrokerReport checks a broker run's report: the RESULT line last,
// with the right peer, and a line for each of wants.
func checkBrokerReport(t *testing.T, out, backend, peer string, wants ...string) {
	t.Helper()
	m := brokerResultRE.FindStringSubmatch(out)
	if m == nil || m[1] != backend || m[2] != peer {
		t.Fatalf("no RESULT line for %s with peer %s", backend, peer)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), m[0]) {
		t.Errorf("RESULT is not the last line")
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestRedis(t *testing.T) {
	url := testenv.URL(t, "redis")
	out := runSmall(t, "-backend", "redis", "-redis-url", url)
	checkBrokerReport(t, out, "redis", "asynq", "drain                 peonify ", "drain                 asynq ",
		"asynq-default ", "raw-redis ", "insert-while-working  asynq ", "idle-pickup           peonify ",
		"idle-pickup           asynq ", "drain ratio peonify/asynq >= 8")

	// Every run deleted its keys, and asynq's list of queues holds none of
	// the benchmark's.
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx := t.Context()
	for _, pattern := range []string{"peonify:{bench_*", "asynq:{bench_*", "pbench:*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			t.Errorf("key left behind: %s", iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
	}
	queues, err := c.SMembers(ctx, "asynq:queues").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if strings.HasPrefix(q, "bench_") {
			t.Errorf("asynq:queues still lists %s", q)
		}
	}
}

func TestNATS(t *testing.T) {
	url := testenv.URL(t, "nats")
	out := runSmall(t, "-backend", "nats", "-nats-url", url)
	checkBrokerReport(t, out, "nats", "raw", "drain                 peonify ", "raw-nats ",
		"insert-while-working  peonify ", "idle-pickup           peonify ", "FetchNoWait(1000)")

	_, js := testenv.ConnectJetStream(t, url)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		if strings.HasPrefix(name, "PBENCH_") {
			t.Errorf("stream %s left behind", name)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestAMQP(t *testing.T) {
	url := testenv.URL(t, "amqp")
	out := runSmall(t, "-backend", "amqp", "-amqp-url", url, "-prefetch", "100")
	checkBrokerReport(t, out, "amqp", "raw", "drain                 peonify ", "raw-amqp ",
		"insert-while-working  peonify ", "idle-pickup           peonify ", "Qos(100)", "Prefetch 100")
}

func TestParseFlagsBrokers(t *testing.T) {
	for _, args := range [][]string{
		{"-backend", "redis", "-systems", "peonify,river"},
		{"-backend", "nats", "-systems", "asynq"},
		{"-backend", "sqlite", "-systems", "raw"},
		{"-backend", "redis", "-prefetch", "10"},
		{"-backend", "postgres", "-pg-url", "postgres://x", "-prefetch", "10"},
		{"-backend", "amqp", "-prefetch", "70000"},
		{"-backend", "nats", "-split-poll", "2"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}

	o, err := parseFlags([]string{"-backend", "redis"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	def := brokerPeonifyDefaults["redis"]
	if o.workers != def.Workers || o.queueSize != def.QueueSize {
		t.Errorf("redis: Workers %d, QueueSize %d; want the broker's defaults %d, %d", o.workers, o.queueSize, def.Workers, def.QueueSize)
	}
	for _, name := range brokerSystems["redis"] {
		if !o.systems[name] {
			t.Errorf("redis: %s is not among the default systems %v", name, o.systems)
		}
	}
	if o.systems[riverTuned.Label] {
		t.Errorf("redis: river among the default systems")
	}

	o, err = parseFlags([]string{"-backend", "nats", "-queue-size", "300", "-systems", "peonify"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.queueSize != 300 || o.workers != brokerPeonifyDefaults["nats"].Workers || len(o.systems) != 1 {
		t.Errorf("nats: QueueSize %d, Workers %d, systems %v; want 300, the default workers, peonify only", o.queueSize, o.workers, o.systems)
	}
}

func TestSeenSet(t *testing.T) {
	s := newSeenSet(3)
	for _, p := range []string{`{"seq":0}`, `{"seq":1}`, `{"seq":1}`, `{"seq":7}`, `junk`} {
		s.add([]byte(p))
	}
	err := s.check()
	if err == nil || !strings.Contains(err.Error(), "2 of 3 distinct tasks, 1 twice, 1 unknown, 1 unreadable") {
		t.Errorf("check = %v", err)
	}
	s = newSeenSet(2)
	s.add(payload(0))
	s.add(payload(1))
	if err := s.check(); err != nil {
		t.Errorf("check of a complete set = %v", err)
	}
}

// TestServerWatch checks the window of a broker server's CPU time: from
// Start after a backlog was inserted, or else from the first Insert after
// Start, until the last completion.
func TestServerWatch(t *testing.T) {
	var clock time.Duration
	meter := func(context.Context) (time.Duration, bool) { clock += time.Second; return clock, true }

	// Drain: inserts, then Start.
	rec := newRecorder(1)
	w := newServerWatch(meter, rec)
	w.inserted() // before Start: not the start of the window
	w.start()    // reads 1s
	rec.completedN(1)
	w.stop() // the background wait read 2s when the recorder was done
	if d, ok := w.result(); !ok || d != time.Second {
		t.Errorf("drain: %s, %v; want 1s", d, ok)
	}

	// Idle: Start, then inserts.
	clock = 0
	rec = newRecorder(1)
	w = newServerWatch(meter, rec)
	w.start()
	w.inserted() // reads 1s
	w.inserted()
	rec.completedN(1)
	w.stop()
	if d, ok := w.result(); !ok || d != time.Second {
		t.Errorf("idle: %s, %v; want 1s", d, ok)
	}

	// A meter that cannot read, or a run that never finished: no figure,
	// and stop returns at once.
	w = newServerWatch(func(context.Context) (time.Duration, bool) { return 0, false }, newRecorder(1))
	w.start()
	w.inserted()
	w.stop()
	w.stop()
	if _, ok := w.result(); ok {
		t.Error("a meter that failed gave a figure")
	}
	w = newServerWatch(meter, newRecorder(1))
	w.inserted()
	w.start()
	w.stop()
	if _, ok := w.result(); ok {
		t.Error("an unfinished run gave a figure")
	}
}
