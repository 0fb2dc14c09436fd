package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
)

// storeFlags choose the store that enqueue and tasks work on: the flag
// of a kind (--store, --postgres...), or a stream of a config file.
type storeFlags struct {
	values map[string]*string // the kinds' flags and their extra flags, by name
	queue  string
	config string
	stream string
}

// storeFlag is how enqueue and tasks name a store of a kind without a
// config file: --<name> VALUE, with --queue and the kind's extra flags.
type storeFlag struct {
	name  string    // the flag, "postgres"
	usage string    // its help
	hint  string    // how a message names it: "--postgres URL"
	extra []flagDef // the kind's other flags, such as --schema
	queue string    // the default of --queue, for a kind it names a queue of
	// spec returns the entry that the flag's value selects, what the
	// store is (for messages) and the flags that select it (for hints).
	// sf holds the other flags. With mustExist, a store that does not
	// exist yet is an error.
	spec func(value string, sf *storeFlags, mustExist bool) (spec storeSpec, desc, flags string, err error)
}

// queueFlag is the storeFlag of a kind whose server --name URL gives and
// --queue a queue of (def by default): newSpec returns the entry, and
// what names the store in messages ("Redis queue").
func queueFlag(name, usage, def, what string, extra []flagDef, newSpec func(url, queue string, sf *storeFlags) storeSpec) *storeFlag {
	return &storeFlag{name: name, usage: usage, hint: "--" + name + " URL", extra: extra, queue: def,
		spec: func(value string, sf *storeFlags, _ bool) (storeSpec, string, string, error) {
			q := sf.queueOr(def)
			return newSpec(value, q, sf), fmt.Sprintf("%s %q at %s", what, q, redactURL(value)), "--" + name + " URL --queue " + shellQuote(q), nil
		}}
}

// flagDef is a string flag.
type flagDef struct{ name, value, usage string }

func (sf *storeFlags) register(fs *flag.FlagSet) {
	sf.values = make(map[string]*string)
	var queues []string // "--redis (default \"default\")"
	for _, k := range kinds() {
		if f := k.flag; f != nil {
			sf.values[f.name] = fs.String(f.name, "", f.usage)
			if f.queue != "" {
				queues = append(queues, fmt.Sprintf("--%s (default %q)", f.name, f.queue))
			}
			for _, x := range f.extra {
				sf.values[x.name] = fs.String(x.name, x.value, x.usage)
			}
		}
	}
	fs.StringVar(&sf.queue, "queue", "", "the `queue`, with "+strings.Join(queues, ", "))
	fs.StringVar(&sf.config, "c", "", "a peonify.yaml `file`: use its stream named by --stream")
	fs.StringVar(&sf.stream, "stream", "", "the stream `name` in the -c file (needed when it has several)")
}

// value returns the value of the flag name of a kind.
func (sf *storeFlags) value(name string) string {
	if v := sf.values[name]; v != nil {
		return *v
	}
	return ""
}

// queueOr returns --queue, or def when it is not given.
func (sf *storeFlags) queueOr(def string) string {
	if sf.queue == "" {
		return def
	}
	return sf.queue
}

// store is a stream for a one-shot command: resolved from the flags by
// resolve, then opened by open.
type store struct {
	stream peonify.Stream // set by open
	spec   storeSpec
	desc   string // what the store is, for messages
	flag   string // the flags that select it, for hints
	r      *resources
	cfg    *config // the config file it is a stream of, with -c
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
	var chosen []*storeFlag
	var names, hints []string
	for _, k := range kinds() {
		if f := k.flag; f != nil {
			names, hints = append(names, "--"+f.name), append(hints, f.hint)
			if sf.value(f.name) != "" {
				chosen = append(chosen, f)
			}
		}
	}
	n := len(chosen)
	if sf.config != "" {
		n++
	}
	switch {
	case n == 0:
		return nil, usagef("no store given: use %s or %s, or -c peonify.yaml [--stream NAME]", strings.Join(hints[:len(hints)-1], ", "), hints[len(hints)-1])
	case n > 1:
		return nil, usagef("give only one of %s and -c", strings.Join(names, ", "))
	case sf.stream != "" && sf.config == "":
		return nil, usagef("--stream names a stream of a config file: give the file with -c")
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var (
		spec streamSpec
		st   = &store{r: newResources(log, false)}
	)
	switch {
	case len(chosen) == 1:
		f := chosen[0]
		s, desc, flags, err := f.spec(sf.value(f.name), sf, mustExist)
		if err != nil {
			return nil, err
		}
		s.common().path = "--" + f.name
		spec, st.desc, st.flag = s, desc, flags
	default:
		cfg, err := loadConfig(sf.config, c.lookupEnv)
		if err != nil {
			return nil, err
		}
		switch {
		case sf.stream != "":
			spec = cfg.stream(sf.stream)
			if spec == nil {
				return nil, usagef("--stream %q is not a stream of %s (streams: %s)", sf.stream, sf.config, yamlfile.QuoteList(cfg.streamNames()))
			}
		case len(cfg.storeNames()) == 1:
			spec = cfg.stream(cfg.storeNames()[0])
		default:
			return nil, usagef("%s has several stores: choose one with --stream (%s)", sf.config, yamlfile.QuoteList(cfg.storeNames()))
		}
		if in, ok := spec.(intakeSpec); ok {
			return nil, usagef("stream %q of %s is a %s intake, which stores its tasks in %q: use --stream %s",
				sf.stream, sf.config, spec.common().Kind, *in.storeField(), shellQuote(*in.storeField()))
		}
		st.cfg = cfg
		st.desc = fmt.Sprintf("stream %q of %s", spec.common().Name, sf.config)
		st.flag = "-c " + shellQuote(sf.config) + " --stream " + shellQuote(spec.common().Name)
	}
	if sf.config == "" {
		if err := spec.check(); err != nil {
			var fe *yamlfile.FieldError
			if errors.As(err, &fe) {
				return nil, usagef("%s", fe.Msg)
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
	return s.spec.payloadLimit(s.r)
}

// taskSize is the size of t that payloadLimit bounds: its payload, and on
// NATS its other fields, which travel as headers.
func (s *store) taskSize(t *peonify.Task) int64 {
	n := int64(len(t.Payload))
	if e, ok := s.spec.(interface{ envelope(*peonify.Task) int64 }); ok {
		n += e.envelope(t)
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
