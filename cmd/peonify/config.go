package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/periodic"
)

// fileConfig is the peonify.yaml file of `peonify run`. Its reference is
// in README.md; keep the two in step.
type fileConfig struct {
	Processor processorConfig          `yaml:"processor"`
	Log       logConfig                `yaml:"log"`
	Streams   []yamlfile.Node          `yaml:"streams"`
	Tasks     map[string]yamlfile.Node `yaml:"tasks"`
	Periodic  []periodicEntry          `yaml:"periodic"`
	Limits    []limitEntry             `yaml:"limits"`
	HTTP      httpConfig               `yaml:"http"`
	Tracing   tracingConfig            `yaml:"tracing"`
	API       *apiConfig               `yaml:"api"`
}

// processorConfig maps onto peonify.Config.
type processorConfig struct {
	Workers         int               `yaml:"workers"`
	QueueSize       int               `yaml:"queue_size"`
	LowWatermark    int               `yaml:"low_watermark"`
	TaskTimeout     yamlfile.Duration `yaml:"task_timeout"`
	ShutdownGrace   yamlfile.Duration `yaml:"shutdown_grace"`
	ShutdownTimeout yamlfile.Duration `yaml:"shutdown_timeout"`
	StoreTimeout    yamlfile.Duration `yaml:"store_timeout"`
	PollInterval    yamlfile.Duration `yaml:"poll_interval"`
	MinPollInterval yamlfile.Duration `yaml:"min_poll_interval"`
	Retry           retryConfig       `yaml:"retry"`
}

// retryConfig maps onto peonify.RetryPolicy.
type retryConfig struct {
	MaxAttempts int               `yaml:"max_attempts"`
	MinBackoff  yamlfile.Duration `yaml:"min_backoff"`
	MaxBackoff  yamlfile.Duration `yaml:"max_backoff"`
	Jitter      float64           `yaml:"jitter"`
}

// logConfig sets up the daemon's log on stderr.
type logConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn or error; defaults to info
	Format string `yaml:"format"` // text or json; defaults to text
}

// periodicEntry is one task enqueued on a schedule.
type periodicEntry struct {
	Name        string            `yaml:"name"`
	Spec        string            `yaml:"spec"`
	Type        string            `yaml:"type"`
	Payload     yamlfile.Payload  `yaml:"payload"`
	Headers     map[string]string `yaml:"headers"`
	Priority    int               `yaml:"priority"`
	MaxAttempts int               `yaml:"max_attempts"`
	Key         string            `yaml:"key"`
	Stream      string            `yaml:"stream"`
}

// config is a loaded and validated config file.
type config struct {
	path      string
	processor peonify.Config
	log       logConfig
	streams   []streamSpec
	tasks     map[string]taskSpec
	periodic  []periodicEntry
	limits    map[string][]peonify.Limit // by the name of the store that enforces them
	http      httpConfig
	tracing   tracing    // resolved with the OTEL_* environment
	api       *apiConfig // nil without an api section
}

// configError is a config file that cannot be used; the command exits
// with status 2.
type configError struct {
	file string
	err  error
}

func (e *configError) Error() string {
	var fe *yamlfile.FieldError
	if errors.As(e.err, &fe) && fe.Pos != nil {
		return fmt.Sprintf("%s:%d:%d: %s", e.file, fe.Pos.Line, fe.Pos.Column, fe.Error())
	}
	return e.file + ": " + e.err.Error()
}

func (e *configError) Unwrap() error { return e.err }

// loadConfig reads, expands and validates the config file at path.
func loadConfig(path string, lookupEnv func(string) (string, bool)) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &configError{path, errors.New("no such file: give the config file with -c (see `peonify run --help` for an example)")}
		}
		return nil, &configError{path, err}
	}
	c, err := parseConfig(data, lookupEnv)
	if err != nil {
		return nil, &configError{path, err}
	}
	c.path = path
	return c, nil
}

// parseConfig parses and validates a config file's contents.
func parseConfig(data []byte, lookupEnv func(string) (string, bool)) (_ *config, err error) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, syntaxError(err)
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, errors.New("the file is empty: it needs at least streams and tasks (see `peonify run --help`)")
	}
	body := f.Docs[0].Body
	defer func() { err = yamlfile.WithPosition(err, body) }()
	if _, ok := body.(*ast.MappingNode); !ok {
		if _, ok := body.(*ast.MappingValueNode); !ok {
			return nil, &yamlfile.FieldError{Pos: body.GetToken().Position, Msg: "the file must be a mapping with streams, tasks and other sections"}
		}
	}
	if err := yamlfile.ExpandEnv(body, lookupEnv); err != nil {
		return nil, err
	}
	var fc fileConfig
	if err := yamlfile.DecodeStrict(body, &fc); err != nil {
		return nil, err
	}
	c := &config{log: fc.Log, periodic: fc.Periodic, http: fc.HTTP, api: fc.API, tasks: make(map[string]taskSpec)}

	if c.processor, err = fc.Processor.toPeonify(); err != nil {
		return nil, err
	}
	switch strings.ToLower(fc.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, yamlfile.Errorf("log.level", "%q is not a level: use debug, info, warn or error", fc.Log.Level)
	}
	switch fc.Log.Format {
	case "", "text", "json":
	default:
		return nil, yamlfile.Errorf("log.format", "%q is not a format: use text or json", fc.Log.Format)
	}

	if len(fc.Streams) == 0 {
		return nil, yamlfile.Errorf("streams", "required: list at least one stream, e.g. {kind: sqlite, path: peonify.db}")
	}
	names := make(map[string]int)
	for i, sn := range fc.Streams {
		path := fmt.Sprintf("streams[%d]", i)
		s, err := decodeStream(sn.N, path)
		if err != nil {
			return nil, err
		}
		name := s.common().Name
		if j, dup := names[name]; dup {
			return nil, yamlfile.Errorf(path+".name", "%q is also the name of streams[%d]: give each stream its own name", name, j)
		}
		names[name] = i
		c.streams = append(c.streams, s)
	}

	if len(fc.Tasks) == 0 {
		return nil, yamlfile.Errorf("tasks", "required: map at least one task type to an executor, e.g. {email: {executor: http, url: ...}}")
	}
	for _, typ := range yamlfile.SortedKeys(fc.Tasks) {
		path := "tasks." + typ
		if len(typ) > peonify.MaxTypeLen {
			return nil, yamlfile.Errorf(path, "the task type name is longer than %d bytes", peonify.MaxTypeLen)
		}
		t, err := decodeTask(fc.Tasks[typ].N, path)
		if err != nil {
			return nil, err
		}
		c.tasks[typ] = t
	}
	if err := c.checkLimits(fc.Limits); err != nil {
		return nil, err
	}
	if err := c.checkIntakes(); err != nil {
		return nil, err
	}
	if err := c.http.check(); err != nil {
		return nil, err
	}
	if err := c.http.checkMetrics(); err != nil {
		return nil, err
	}
	if c.tracing, err = fc.Tracing.resolve(lookupEnv); err != nil {
		return nil, err
	}
	if err := c.checkListeners(); err != nil {
		return nil, err
	}
	if err := c.checkAPI(); err != nil {
		return nil, err
	}

	if len(c.periodic) > 0 {
		check, err := periodic.New(discardEnqueuer{}, periodic.Config{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, err
		}
		for i := range c.periodic {
			if err := c.checkPeriodic(i); err != nil {
				return nil, err
			}
			if err := check.Add(c.periodic[i].job()); err != nil {
				return nil, periodicError(i, err)
			}
		}
	}
	return c, nil
}

// syntaxError keeps the position of a YAML syntax error.
func syntaxError(err error) error {
	var fe *yamlfile.FieldError
	if errors.As(err, &fe) {
		return fe
	}
	var ye yaml.Error
	if errors.As(err, &ye) && ye.GetToken() != nil {
		return &yamlfile.FieldError{Pos: ye.GetToken().Position, Msg: "YAML syntax: " + ye.GetMessage()}
	}
	return fmt.Errorf("YAML syntax: %w", err)
}

// checkPeriodic validates periodic[i] against the streams and task types.
func (c *config) checkPeriodic(i int) error {
	pe := &c.periodic[i]
	path := fmt.Sprintf("periodic[%d]", i)
	switch {
	case pe.Name == "":
		return yamlfile.Errorf(path+".name", "required: a name that stays the same across restarts and processors")
	case pe.Spec == "":
		return yamlfile.Errorf(path+".spec", `required: a cron expression ("0 3 * * *"), a descriptor ("@daily") or an interval ("@every 10m")`)
	case pe.Type == "":
		return yamlfile.Errorf(path+".type", "required: the task type to enqueue")
	case pe.MaxAttempts < 0:
		return yamlfile.Errorf(path+".max_attempts", "must not be negative (0 means the processor's retry.max_attempts)")
	case len(pe.Key) > peonify.MaxKeyLen:
		return yamlfile.Errorf(path+".key", "is longer than %d bytes", peonify.MaxKeyLen)
	}
	for j := range i {
		if c.periodic[j].Name == pe.Name {
			return yamlfile.Errorf(path+".name", "%q is also the name of periodic[%d]: names must be unique", pe.Name, j)
		}
	}
	if _, ok := c.tasks[pe.Type]; !ok {
		return yamlfile.Errorf(path+".type", "%q is not a task type of this file (tasks: %s)", pe.Type, yamlfile.QuoteList(yamlfile.SortedKeys(c.tasks)))
	}
	stores := c.storeNames()
	if pe.Stream == "" {
		if len(stores) != 1 {
			return yamlfile.Errorf(path+".stream", "required when there are several stores: name the stream the task goes to (%s)", yamlfile.QuoteList(stores))
		}
		pe.Stream = stores[0]
	}
	switch s := c.stream(pe.Stream); s.(type) {
	case nil:
		return yamlfile.Errorf(path+".stream", "%q is not the name of a stream (stores: %s)", pe.Stream, yamlfile.QuoteList(stores))
	case intakeSpec:
		return yamlfile.Errorf(path+".stream", "%q is a %s intake, which stores into another stream: name a store (%s)", pe.Stream, s.common().Kind, yamlfile.QuoteList(stores))
	}
	return nil
}

// checkIntakes resolves the store of each intake, lets the intake set
// defaults of its store (a webhook keeps finished tasks in a SQLite store
// for a day), gives the intakes that recognise resends themselves their
// resend_log, and checks the task types their routes name.
func (c *config) checkIntakes() error {
	stores := c.storeNames()
	if len(stores) == 0 {
		return yamlfile.Errorf("streams", "no store to run tasks from: intakes (webhook, websocket, mqtt) write into a store of the file, such as {kind: sqlite, path: peonify.db}")
	}
	resendLogs := make(map[string]string) // file -> the path of the intake that uses it
	for _, s := range c.streams {
		in, ok := s.(intakeSpec)
		if !ok {
			continue
		}
		path := s.common().path
		if _, err := parseKeyFrom(in.keyFromField()); err != nil {
			return yamlfile.Errorf(path+".key_from", "%v", err)
		}
		store := in.storeField()
		if *store == "" {
			if len(stores) > 1 {
				return yamlfile.Errorf(path+".store", "required when there are several stores: name the stream the intake stores its tasks in (%s)", yamlfile.QuoteList(stores))
			}
			*store = stores[0]
		}
		switch st := c.stream(*store).(type) {
		case nil:
			return yamlfile.Errorf(path+".store", "%q is not the name of a stream (stores: %s)", *store, yamlfile.QuoteList(stores))
		case intakeSpec:
			return yamlfile.Errorf(path+".store", "%q is an intake, not a store: name a store (%s)", *store, yamlfile.QuoteList(stores))
		case storeSpec:
			if d, ok := s.(storeDefaulter); ok {
				d.defaultStore(st)
			}
		}
		if ri, ok := s.(resendIntake); ok {
			rf := ri.resends()
			if rf.ResendLog == "" && rf.ResendWindow >= 0 {
				rf.ResendLog = defaultResendLog(s.common().Name, c.stream(*store))
			}
			if other, dup := resendLogs[rf.ResendLog]; dup && rf.ResendLog != "" {
				return yamlfile.Errorf(path+".resend_log", "%q is also the resend_log of %s: give each intake its own file", rf.ResendLog, other)
			}
			resendLogs[rf.ResendLog] = path
		}
		for _, ref := range in.taskTypes() {
			if _, ok := c.tasks[ref.typ]; !ok {
				return yamlfile.Errorf(ref.path, "%q is not a task type of this file (tasks: %s)", ref.typ, yamlfile.QuoteList(yamlfile.SortedKeys(c.tasks)))
			}
		}
	}
	return nil
}

// checkListeners refuses two servers of the file on one address.
func (c *config) checkListeners() error {
	seen := make(map[string]string)
	add := func(addr, path string) error {
		if addr == "" {
			return nil
		}
		if other, dup := seen[addr]; dup {
			return yamlfile.Errorf(path, "%q is also the address of %s: give each server its own port", addr, other)
		}
		seen[addr] = path
		return nil
	}
	if err := add(c.http.Listen, "http.listen"); err != nil {
		return err
	}
	for _, s := range c.streams {
		hi, ok := s.(httpIntake)
		if !ok {
			continue
		}
		sf := hi.server()
		if _, port, _ := net.SplitHostPort(sf.Listen); port == "0" {
			continue // a port chosen by the system is never taken twice
		}
		if err := add(sf.Listen, s.common().path+".listen"); err != nil {
			return err
		}
	}
	return nil
}

// storeNames returns the names of the streams that are stores, not
// intakes.
func (c *config) storeNames() []string {
	var names []string
	for _, s := range c.streams {
		if _, ok := s.(storeSpec); ok {
			names = append(names, s.common().Name)
		}
	}
	return names
}

// stream returns the stream spec named name, or nil.
func (c *config) stream(name string) streamSpec {
	for _, s := range c.streams {
		if s.common().Name == name {
			return s
		}
	}
	return nil
}

func (c *config) streamNames() []string {
	names := make([]string, len(c.streams))
	for i, s := range c.streams {
		names[i] = s.common().Name
	}
	return names
}

// toPeonify validates the processor section and returns it as a
// peonify.Config, reporting errors under the file's field names.
func (pc processorConfig) toPeonify() (peonify.Config, error) {
	cfg := peonify.Config{
		Workers:         pc.Workers,
		QueueSize:       pc.QueueSize,
		LowWatermark:    pc.LowWatermark,
		TaskTimeout:     time.Duration(pc.TaskTimeout),
		ShutdownGrace:   time.Duration(pc.ShutdownGrace),
		ShutdownTimeout: time.Duration(pc.ShutdownTimeout),
		StoreTimeout:    time.Duration(pc.StoreTimeout),
		PollInterval:    time.Duration(pc.PollInterval),
		MinPollInterval: time.Duration(pc.MinPollInterval),
		Retry: peonify.RetryPolicy{
			MaxAttempts: pc.Retry.MaxAttempts,
			MinBackoff:  time.Duration(pc.Retry.MinBackoff),
			MaxBackoff:  time.Duration(pc.Retry.MaxBackoff),
			Jitter:      pc.Retry.Jitter,
		},
	}
	if _, err := peonify.New(cfg); err != nil {
		return cfg, libraryError("processor", pc, err)
	}
	return cfg, nil
}

// libraryError turns a *peonify.ConfigError of the library, whose Field
// names a field in Go terms ("redisstream.Config.Lease",
// "Config.Retry.Jitter"), into an error at the same field of the section
// at path, found by the yaml tags of spec: the fields of a section carry
// the Go names of the config they map onto (see yamlfile.PathOf). Another
// error is reported at path; nil stays nil.
func libraryError(path string, spec any, err error) error {
	var ce *peonify.ConfigError
	if err == nil {
		return nil
	}
	if !errors.As(err, &ce) {
		return yamlfile.Errorf(path, "%v", err)
	}
	_, goPath, _ := strings.Cut(ce.Field, "Config.")
	return yamlfile.Errorf(path+yamlfile.PathOf(spec, goPath), "%s", ce.Reason)
}

// logger returns the daemon's logger, writing to w.
func (lc logConfig) logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(lc.Level) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
