package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/peonify/peonify"
)

// storeFlags choose the store that enqueue and tasks work on.
type storeFlags struct {
	store      string
	postgres   string
	redis      string
	nats       string
	amqp       string
	queue      string
	schema     string
	natsStream string
	config     string
	stream     string
}

func (sf *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.store, "store", "", "the SQLite store `file` (a sqlite stream's path)")
	fs.StringVar(&sf.postgres, "postgres", "", "a Postgres database `URL` (with --queue)")
	fs.StringVar(&sf.redis, "redis", "", "a Redis server `URL` (with --queue)")
	fs.StringVar(&sf.nats, "nats", "", "a NATS server `URL` (with --nats-stream)")
	fs.StringVar(&sf.amqp, "amqp", "", "a RabbitMQ broker `URL` (with --queue)")
	fs.StringVar(&sf.queue, "queue", "", "the `queue`, with --postgres or --redis (default \"default\"), or --amqp (default \"peonify\")")
	fs.StringVar(&sf.schema, "schema", "public", "the Postgres `schema`, with --postgres")
	fs.StringVar(&sf.natsStream, "nats-stream", "PEONIFY", "the JetStream `stream`, with --nats")
	fs.StringVar(&sf.config, "c", "", "a peonify.yaml `file`: use its stream named by --stream")
	fs.StringVar(&sf.stream, "stream", "", "the stream `name` in the -c file (needed when it has several)")
}

// store is a stream for a one-shot command: resolved from the flags by
// resolve, then opened by open.
type store struct {
	stream peonify.Stream // set by open
	spec   storeSpec
	desc   string // what the store is, for messages
	flag   string // the flags that select it, for hints
	r      *resources
}

func (s *store) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.stream.Close(ctx)
	s.r.close()
}

// open opens the store the flags select. With mustExist, a SQLite file
// that does not exist is an error instead of a new empty store.
func (sf *storeFlags) open(ctx context.Context, c *cli, mustExist bool) (*store, error) {
	st, err := sf.resolve(c, mustExist)
	if err != nil {
		return nil, err
	}
	if err := st.open(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// resolve finds the store the flags select and checks its settings,
// without connecting to it.
func (sf *storeFlags) resolve(c *cli, mustExist bool) (*store, error) {
	n := 0
	for _, set := range []bool{sf.store != "", sf.postgres != "", sf.redis != "", sf.nats != "", sf.amqp != "", sf.config != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return nil, usagef("no store given: use --store FILE (SQLite), --postgres URL, --redis URL, --nats URL or --amqp URL, or -c peonify.yaml [--stream NAME]")
	case n > 1:
		return nil, usagef("give only one of --store, --postgres, --redis, --nats, --amqp and -c")
	case sf.stream != "" && sf.config == "":
		return nil, usagef("--stream names a stream of a config file: give the file with -c")
	}
	queue := func(def string) string {
		if sf.queue == "" {
			return def
		}
		return sf.queue
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var (
		spec streamSpec
		st   = &store{r: newResources(log, false)}
	)
	switch {
	case sf.store != "":
		if _, err := os.Stat(sf.store); mustExist && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no store at %s: check --store (a store is created by `peonify run`, `peonify enqueue` or `peonify demo --store`)", sf.store)
		}
		s := &sqliteSpec{Path: sf.store}
		s.Common.Name, s.Common.path = "sqlite", "--store"
		spec, st.desc, st.flag = s, "SQLite store "+sf.store, "--store "+shellQuote(sf.store)
	case sf.postgres != "":
		q := queue("default")
		s := &postgresSpec{URL: sf.postgres, Queue: q, Schema: sf.schema}
		s.Common.path = "--postgres"
		spec, st.desc = s, fmt.Sprintf("queue %q at %s", q, redactURL(sf.postgres))
		st.flag = "--postgres URL --queue " + shellQuote(q)
	case sf.redis != "":
		q := queue("default")
		s := &redisSpec{URL: sf.redis, Queue: q}
		s.Common.path = "--redis"
		spec, st.desc = s, fmt.Sprintf("Redis queue %q at %s", q, redactURL(sf.redis))
		st.flag = "--redis URL --queue " + shellQuote(q)
	case sf.nats != "":
		s := &natsSpec{URL: sf.nats, Stream: sf.natsStream}
		s.Common.path = "--nats"
		spec, st.desc = s, fmt.Sprintf("JetStream stream %q at %s", sf.natsStream, redactURL(sf.nats))
		st.flag = "--nats URL --nats-stream " + shellQuote(sf.natsStream)
	case sf.amqp != "":
		q := queue("peonify")
		s := &amqpSpec{URL: sf.amqp, Queue: q}
		s.Common.path = "--amqp"
		spec, st.desc = s, fmt.Sprintf("RabbitMQ queue %q at %s", q, redactURL(sf.amqp))
		st.flag = "--amqp URL --queue " + shellQuote(q)
	default:
		cfg, err := loadConfig(sf.config, c.lookupEnv)
		if err != nil {
			return nil, err
		}
		switch {
		case sf.stream != "":
			spec = cfg.stream(sf.stream)
			if spec == nil {
				return nil, usagef("--stream %q is not a stream of %s (streams: %s)", sf.stream, sf.config, quoteList(cfg.streamNames()))
			}
		case len(cfg.storeNames()) == 1:
			spec = cfg.stream(cfg.storeNames()[0])
		default:
			return nil, usagef("%s has several stores: choose one with --stream (%s)", sf.config, quoteList(cfg.storeNames()))
		}
		if in, ok := spec.(intakeSpec); ok {
			return nil, usagef("stream %q of %s is a %s intake, which stores its tasks in %q: use --stream %s",
				sf.stream, sf.config, spec.common().Kind, *in.storeField(), shellQuote(*in.storeField()))
		}
		st.desc = fmt.Sprintf("stream %q of %s", spec.common().Name, sf.config)
		st.flag = "-c " + shellQuote(sf.config) + " --stream " + shellQuote(spec.common().Name)
	}
	if sf.config == "" {
		if err := spec.check(); err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return nil, usagef("%s", fe.msg)
			}
			return nil, err
		}
	}
	st.spec = spec.(storeSpec)
	return st, nil
}

// open connects to the store that resolve found.
func (s *store) open(ctx context.Context) error {
	stream, err := s.spec.open(ctx, s.r)
	if err != nil {
		s.r.close()
		return err
	}
	s.stream = stream
	return nil
}

// inspector returns the store's Inspector.
func (s *store) inspector() (peonify.Inspector, error) {
	in, ok := inspectorOf(s.stream)
	if !ok {
		return nil, fmt.Errorf("the %s cannot be inspected", s.desc)
	}
	return in, nil
}

// enqueuer returns the store's Enqueuer.
func (s *store) enqueuer() (peonify.Enqueuer, error) {
	e, ok := peonify.As[peonify.Enqueuer](s.stream)
	if !ok {
		return nil, fmt.Errorf("the %s does not take tasks from producers", s.desc)
	}
	return e, nil
}

// shellQuote quotes s for a command line shown to the user, if needed.
func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '/' || r == ':') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	if s == "" {
		return "''"
	}
	return s
}

// natsEnvelope is room left in a NATS message for the headers that carry a
// task's fields, beyond the task's own ID, type, unique key and headers.
const natsEnvelope = 512

// payloadLimit is the largest task payload, in bytes, that the store
// takes, and what sets that limit. A NATS store's limit is its server's
// max_payload, less the task's headers, and known once the store is open;
// before, it is the most any NATS server takes. The other limits are those
// of the servers' defaults: a broker configured lower refuses a larger
// task itself, when it is stored.
func (s *store) payloadLimit() (int64, string) {
	switch s.spec.(type) {
	case *sqliteSpec:
		return 1_000_000_000 - 1<<20, "SQLite's largest row, less room for the task's other fields"
	case *postgresSpec:
		return 1<<30 - 1<<20, "Postgres's largest value and message, less room for the task's other fields"
	case *redisSpec:
		return 512 << 20, "Redis's largest string (proto-max-bulk-len)"
	case *amqpSpec:
		return 128 << 20, "RabbitMQ's default max_message_size"
	case *natsSpec:
		for _, nc := range s.r.natsConns {
			return nc.MaxPayload() - natsEnvelope, "its server's max_payload, less the task's headers"
		}
		return 64 << 20, "the largest max_payload of a NATS server"
	}
	return 1<<31 - 1, "the largest payload enqueue takes"
}

// taskSize is the size of t that payloadLimit bounds: its payload, and on
// NATS its other fields, which travel as headers.
func (s *store) taskSize(t *peonify.Task) int64 {
	n := int64(len(t.Payload))
	if _, ok := s.spec.(*natsSpec); ok {
		n += int64(len(t.ID) + len(t.Type) + len(t.UniqueKey))
		for k, v := range t.Headers {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// pgConnectError returns pgx's connection error as one line: pgx lists
// the error of each attempt on a line of its own (sslmode=prefer tries
// with TLS, then without; a host name may have several addresses), most
// often the same error twice. The user and database are in the URL that
// the caller shows.
func pgConnectError(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) || ce.Unwrap() == nil {
		return err
	}
	var causes []string
	for _, line := range strings.Split(ce.Unwrap().Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" && !slices.Contains(causes, line) {
			causes = append(causes, line)
		}
	}
	return errors.New(strings.Join(causes, "; "))
}
