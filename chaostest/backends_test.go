//go:build unix

package chaostest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/internal/testqueue"
	"github.com/peonify/peonify/streams/amqpstream"
	"github.com/peonify/peonify/streams/natsstream"
	"github.com/peonify/peonify/streams/pgstream"
	"github.com/peonify/peonify/streams/redisstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// streamSpec tells a process, the test or a child, how to open the
// stream of one cell. It travels to children as JSON.
type streamSpec struct {
	Kind  string        // a backend name: "sqlite", "postgres", "redis", "nats", "amqp"
	Addr  string        // the database file, or the server's URL
	Queue string        // the queue, stream or key prefix unique to the cell
	Lease time.Duration // the stream's lease (AckWait for NATS); for AMQP the heartbeat
}

// opened is a stream opened from a streamSpec, with what its kind offers
// besides the Stream contract.
type opened struct {
	s    peonify.Stream
	enq  peonify.Enqueuer
	insp peonify.Inspector
	done func() // closes the client the stream was built on, after the stream is closed
}

// chaosLease is the lease of the cells' streams: short, so that the tasks
// of a killed or stopped process come back within seconds, and long enough
// that a live process under load never loses one. Streams look for expired
// leases every quarter of it.
const chaosLease = 2 * time.Second

// openStream opens the stream spec describes. name identifies the process
// to the server where the stream has such a setting (consumer names,
// claimed_by, connection names).
func openStream(ctx context.Context, spec streamSpec, name string, logger *slog.Logger) (*opened, error) {
	switch spec.Kind {
	case "sqlite":
		s, err := sqlitestream.Open(spec.Addr, sqlitestream.Config{Lease: spec.Lease, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, enq: s, insp: s, done: func() {}}, nil

	case "postgres":
		cfg, err := pgxpool.ParseConfig(spec.Addr)
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "chaostest-" + name
		if cfg.ConnConfig.ConnectTimeout == 0 {
			// pgstream.New asks for one: without it, a connection attempt
			// into a half-open link hangs for good and holds a place in
			// the pool. The attempts made while the link was silent hold
			// theirs until it ends them, so it bounds how long the
			// halfopen cell's processor takes to work again after the
			// heal: under a second with 2s, about 9s with cmd/peonify's
			// default of 10s.
			cfg.ConnConfig.ConnectTimeout = 2 * time.Second
		}
		s, done, err := testqueue.PostgresStream(ctx, cfg, pgstream.Config{Queue: spec.Queue, Lease: spec.Lease, RescueInterval: spec.Lease / 4,
			Identity: name, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, enq: s, insp: s, done: done}, nil

	case "redis":
		s, done, err := testqueue.RedisStream(spec.Addr, redisstream.Config{Prefix: spec.Queue, Queue: "chaos", Consumer: name,
			Lease: spec.Lease, RescueInterval: spec.Lease / 4, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, enq: s, insp: s, done: done}, nil

	case "nats":
		return openNATS(spec.Addr, spec, name, logger)

	case "amqp":
		s, err := amqpstream.New(spec.Addr, amqpstream.Config{Queue: spec.Queue, Identity: "chaostest-" + name,
			AMQP:         amqp.Config{Heartbeat: spec.Lease},
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: time.Second, Logger: logger})
		if err != nil {
			return nil, err
		}
		return &opened{s: s, enq: s, insp: s, done: func() {}}, nil
	}
	if open, ok := openers[spec.Kind]; ok {
		return open(ctx, spec, name, logger)
	}
	return nil, fmt.Errorf("unknown stream kind %q", spec.Kind)
}

// openers open the stream kinds that files of their own add to the matrix
// (the clusters, in cluster_*_test.go), by kind. They register in an init
// function, so that children, which run this binary, open them too.
var openers = map[string]func(ctx context.Context, spec streamSpec, name string, logger *slog.Logger) (*opened, error){}

// openNATS opens the NATS stream spec describes on a connection to urls
// (comma-separated), reconnecting for good, quickly; extra options are
// added to the connection's.
func openNATS(urls string, spec streamSpec, name string, logger *slog.Logger, extra ...nats.Option) (*opened, error) {
	opts := append([]nats.Option{nats.Name("chaostest-" + name), nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond), nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond)}, extra...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s, err := natsstream.New(js, natsConfig(spec, logger))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &opened{s: s, enq: s, insp: s, done: nc.Close}, nil
}

func natsConfig(spec streamSpec, logger *slog.Logger) natsstream.Config {
	return natsstream.Config{Stream: spec.Queue, Subject: "chaos." + spec.Queue, AckWait: spec.Lease, Logger: logger}
}

// backend is one kind of durable stream in the matrix.
type backend struct {
	name string

	// prepare makes a fresh queue for one cell, on the server at addr or,
	// when addr is empty, on the tests' server, and returns its spec. The
	// queue is removed when the test ends.
	prepare func(t *testing.T, dir, addr string) streamSpec

	// restarter returns a server the restart scenario may restart; nil for
	// the embedded store.
	restarter func(t *testing.T, dir string) *restarter

	// seesRunning says whether the Inspector of one process counts and
	// finds the tasks other processes are running.
	seesRunning bool

	// acksConfirmed says whether an Ack that returned nil has been applied
	// by the server, so that a server restart right after it cannot
	// deliver the task again. AMQP does not confirm acks.
	acksConfirmed bool

	// raw stores odd tasks the way producers in other languages do, with
	// the broker's own client, and returns those that must complete and
	// those that must end dead; nil where the stream documents no such
	// producers.
	raw func(t *testing.T, spec streamSpec) (complete, dead []string)

	// cluster marks a backend whose prepare starts a cluster of the test's
	// own: only the scenarios marked cluster run on it, and those run on
	// nothing else.
	cluster bool
}

var backends = []*backend{
	{name: "sqlite", prepare: prepareSQLite, seesRunning: true, acksConfirmed: true},
	{name: "postgres", prepare: preparePostgres, restarter: sharedPostgres, seesRunning: true, acksConfirmed: true, raw: rawPostgres},
	{name: "redis", prepare: prepareRedis, restarter: privateRedis, seesRunning: true, acksConfirmed: true, raw: rawRedis},
	{name: "nats", prepare: prepareNATS, restarter: privateNATS, seesRunning: true, acksConfirmed: true, raw: rawNATS},
	{name: "amqp", prepare: prepareAMQP, restarter: sharedRabbitMQ, raw: rawAMQP},
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func prepareSQLite(t *testing.T, dir, _ string) streamSpec {
	return streamSpec{Kind: "sqlite", Addr: filepath.Join(dir, "tasks.db"), Queue: "chaos", Lease: chaosLease}
}

func preparePostgres(t *testing.T, _, url string) streamSpec {
	if url == "" {
		url = testenv.URL(t, "postgres")
	}
	spec := streamSpec{Kind: "postgres", Addr: url, Queue: "chaos-" + randHex(6), Lease: chaosLease}
	testqueue.Postgres(t, url, spec.Queue)
	return spec
}

func prepareRedis(t *testing.T, _, url string) streamSpec {
	if url == "" {
		url = testenv.URL(t, "redis")
	}
	spec := streamSpec{Kind: "redis", Addr: url, Queue: "chaos-" + randHex(6), Lease: chaosLease}
	testqueue.Redis(t, url, spec.Queue)
	return spec
}

func prepareNATS(t *testing.T, _, url string) streamSpec {
	if url == "" {
		url = testenv.URL(t, "nats")
	}
	spec := streamSpec{Kind: "nats", Addr: url, Queue: "CHAOS_" + randHex(6), Lease: chaosLease}
	withJS(t, url, func(ctx context.Context, js jetstream.JetStream) error {
		return natsstream.Setup(ctx, js, natsConfig(spec, nil))
	})
	t.Cleanup(func() {
		withJS(t, spec.Addr, func(ctx context.Context, js jetstream.JetStream) error {
			return natsstream.Teardown(ctx, js, natsConfig(spec, nil))
		})
	})
	return spec
}

// withJS runs fn on a connection of its own to the NATS server at url.
func withJS(t *testing.T, url string, fn func(context.Context, jetstream.JetStream) error) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("chaostest-setup"))
	if err != nil {
		t.Error(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fn(ctx, js); err != nil {
		t.Error(err)
	}
}

func prepareAMQP(t *testing.T, _, url string) streamSpec {
	if url == "" {
		url = testenv.URL(t, "amqp")
	}
	// The heartbeat is how a broker notices a stopped process: it drops
	// the connection after missing two, and requeues its messages.
	spec := streamSpec{Kind: "amqp", Addr: url, Queue: "chaos." + randHex(6), Lease: time.Second}
	t.Cleanup(func() { deleteAMQPQueues(t, spec) })
	return spec
}

// deleteAMQPQueues deletes the work queue of the cell, its dead-letter
// queue and every delay queue its stream may have declared (powers of two
// of milliseconds).
func deleteAMQPQueues(t *testing.T, spec streamSpec) {
	conn, err := amqp.Dial(spec.Addr)
	if err != nil {
		t.Errorf("deleting the queues of %s: %v", spec.Queue, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("deleting the queues of %s: %v", spec.Queue, err)
		return
	}
	names := []string{spec.Queue, spec.Queue + ".dead"}
	for e := range 32 {
		names = append(names, fmt.Sprintf("%s.delay.%d", spec.Queue, int64(1)<<e))
	}
	for _, name := range names {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Errorf("deleting queue %s: %v", name, err)
			return
		}
	}
}

// pingPostgres returns nil once Postgres at rawURL answers a query.
func pingPostgres(ctx context.Context, rawURL string) error {
	pool, err := pgxpool.New(ctx, rawURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	return pool.Ping(ctx)
}

// chaosEnabled reports whether the full matrix runs.
func chaosEnabled() bool { return os.Getenv("PEONIFY_CHAOS") == "1" }

// rawPostgres inserts rows as a plain SQL producer would: headers with
// values that are not strings, and a type no processor handles.
func rawPostgres(t *testing.T, spec streamSpec) (complete, dead []string) {
	pool, err := pgxpool.New(context.Background(), spec.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = pool.Exec(ctx, `INSERT INTO peonify_tasks (queue, id, type, payload, headers) VALUES
		($1, 'raw-odd-headers', 'chaos', convert_to('{}', 'UTF8'), '{"nested":{"a":1},"number":2,"list":[1],"null":null,"s":"x"}'),
		($1, 'raw-no-payload', 'chaos', DEFAULT, NULL),
		($1, 'raw-unknown-type', 'no-such-type', convert_to('{}', 'UTF8'), NULL)`, spec.Queue)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"raw-odd-headers", "raw-no-payload"}, []string{"raw-unknown-type"}
}

// rawRedis adds entries as a plain XADD would: numbers and headers that do
// not parse, no payload, and no type.
func rawRedis(t *testing.T, spec streamSpec) (complete, dead []string) {
	opts, err := redis.ParseURL(spec.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := spec.Queue + ":{chaos}:stream" // redisstream.Keys.Stream of Prefix spec.Queue, Queue "chaos"
	for _, fields := range [][]any{
		{"type", "chaos", "id", "raw-bad-fields", "payload", "{}", "max_attempts", "many", "priority", "high",
			"enqueued_at", "yesterday", "headers", "{not json"},
		{"type", "chaos", "id", "raw-no-payload"},
		{"id", "raw-no-type", "payload", "{}"},
	} {
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: fields}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return []string{"raw-bad-fields", "raw-no-payload"}, []string{"raw-no-type"}
}

// rawNATS publishes messages as another NATS client would: one without a
// type, one whose run-at time does not parse, and one with an extra header.
func rawNATS(t *testing.T, spec streamSpec) (complete, dead []string) {
	withJS(t, spec.Addr, func(ctx context.Context, js jetstream.JetStream) error {
		subject := natsConfig(spec, nil).Subject
		for _, m := range []struct {
			id      string
			headers map[string]string
		}{
			{"raw-no-type", nil},
			{"raw-bad-run-at", map[string]string{"Peonify-Type": "chaos", "Peonify-Run-At": "tomorrow-ish"}},
			{"raw-extra-header", map[string]string{"Peonify-Type": "chaos", "X-Tenant": "acme"}},
		} {
			msg := nats.NewMsg(subject)
			msg.Data = []byte(`{}`)
			msg.Header.Set("Nats-Msg-Id", m.id)
			for k, v := range m.headers {
				msg.Header.Set(k, v)
			}
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				return err
			}
		}
		return nil
	})
	return []string{"raw-extra-header"}, []string{"raw-no-type", "raw-bad-run-at"}
}

// rawAMQP publishes messages as another AMQP client would: one without a
// type, and one whose headers are tables and numbers.
func rawAMQP(t *testing.T, spec streamSpec) (complete, dead []string) {
	conn, err := amqp.Dial(spec.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range []amqp.Publishing{
		{MessageId: "raw-no-type", DeliveryMode: amqp.Persistent, Body: []byte(`{}`)},
		{MessageId: "raw-odd-headers", Type: "chaos", DeliveryMode: amqp.Persistent, Body: []byte(`{}`),
			Headers: amqp.Table{"nested": amqp.Table{"a": int32(1)}, "number": int64(2), "flag": true, "list": []any{"x", int32(1)}}},
	} {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", spec.Queue, true, false, p)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("the broker did not confirm message %s: %v", p.MessageId, err)
		}
	}
	return []string{"raw-odd-headers"}, []string{"raw-no-type"}
}
