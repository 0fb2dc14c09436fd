package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, the same one sqlitestream uses
)

// riverConfig is how the benchmark configures River.
type riverConfig struct {
	Label             string
	MaxWorkers        int
	FetchCooldown     time.Duration // zero: River's default
	FetchPollInterval time.Duration // zero: River's default
}

// riverTuned is River in the configuration its own benchmark command uses.
var riverTuned = riverConfig{Label: "river", MaxWorkers: 2000,
	FetchCooldown: 2 * time.Millisecond, FetchPollInterval: 20 * time.Millisecond}

// riverDefault is River as its documentation sets it up: 100 workers and
// the default fetch timings (100 ms cooldown, 1 s poll interval).
var riverDefault = riverConfig{Label: "river-default", MaxWorkers: 100}

func (c riverConfig) String() string {
	s := fmt.Sprintf("MaxWorkers %d", c.MaxWorkers)
	if c.FetchCooldown != 0 {
		s += fmt.Sprintf(", FetchCooldown %s, FetchPollInterval %s", c.FetchCooldown, c.FetchPollInterval)
	} else {
		s += ", default fetch timings"
	}
	return s
}

// riverArgs are River's job arguments: the same JSON as Peonify's payload.
type riverArgs struct {
	Seq int `json:"seq"`
}

func (riverArgs) Kind() string { return "bench" }

// riverWorker is River's no-op handler.
type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	rec *recorder
}

func (w *riverWorker) Work(_ context.Context, j *river.Job[riverArgs]) error {
	w.rec.started(j.Args.Seq)
	return nil
}

// riverSystem is a River client on Postgres (pgx) or SQLite
// (database/sql); TTx is the driver's transaction type.
type riverSystem[TTx any] struct {
	client     *river.Client[TTx]
	rec        *recorder
	queue      string
	count      func(ctx context.Context) (map[string]int, error)
	cleanup    func()
	sc         *freshSchema // on postgres
	schemaName string
	driver     riverdriver.Driver[TTx]
	remote     *river.Client[TTx] // insert-only client, made by the first RemoteInsert
	log        *slog.Logger

	subDone chan struct{}
	unsub   func()
	started bool
}

// newRiver returns the constructor of River systems with cfg.
func newRiver(cfg riverConfig) newSystemFunc {
	return func(ctx context.Context, e *env, rec *recorder) (system, error) {
		queue := randName("bench_")
		switch e.backend {
		case "sqlite":
			path := e.sqliteFile("river")
			// Durable commits, like sqlitestream's default: WAL with a sync
			// at every commit. River asks for one connection on SQLite.
			db, err := sql.Open("sqlite", "file:"+path+
				"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)")
			if err != nil {
				return nil, err
			}
			db.SetMaxOpenConns(1)
			cleanup := func() { _ = db.Close(); removeSQLite(path) }
			count := func(ctx context.Context) (map[string]int, error) {
				return countRows(ctx, db.QueryContext, `SELECT state, count(*) FROM river_job WHERE queue = ? GROUP BY state`, queue)
			}
			s, err := startRiver(ctx, riversqlite.New(db), "", cfg, queue, e, rec)
			if err != nil {
				cleanup()
				return nil, err
			}
			s.count, s.cleanup = count, cleanup
			return s, nil
		case "postgres":
			sc, err := e.newSchema(ctx)
			if err != nil {
				return nil, err
			}
			count := func(ctx context.Context) (map[string]int, error) {
				rows, err := sc.pool.Query(ctx, `SELECT state::text, count(*) FROM `+sc.name+`.river_job WHERE queue = $1 GROUP BY state`, queue)
				if err != nil {
					return nil, err
				}
				defer rows.Close()
				return scanCounts(rows)
			}
			s, err := startRiver(ctx, riverpgxv5.New(sc.pool), sc.name, cfg, queue, e, rec)
			if err != nil {
				sc.drop()
				return nil, err
			}
			s.count, s.cleanup, s.sc = count, sc.drop, sc
			return s, nil
		}
		return nil, fmt.Errorf("unknown backend %q", e.backend)
	}
}

// startRiver migrates the database and builds a client that has not
// started working yet.
func startRiver[TTx any](ctx context.Context, driver riverdriver.Driver[TTx], schema string, cfg riverConfig,
	queue string, e *env, rec *recorder) (*riverSystem[TTx], error) {
	m, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: schema, Logger: e.log})
	if err != nil {
		return nil, err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("river migrations: %w", err)
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &riverWorker{rec: rec}); err != nil {
		return nil, err
	}
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: cfg.MaxWorkers}},
		Workers:           workers,
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
		Schema:            schema,
		Logger:            e.log,
	})
	if err != nil {
		return nil, err
	}
	return &riverSystem[TTx]{client: client, rec: rec, queue: queue, driver: driver, schemaName: schema, log: e.log}, nil
}

// countRows runs a "state, count" query through database/sql.
func countRows(ctx context.Context, query func(context.Context, string, ...any) (*sql.Rows, error),
	q string, args ...any) (map[string]int, error) {
	rows, err := query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanCounts(rows)
}

// scanCounts reads the rows of a "state, count" query.
func scanCounts(rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}) (map[string]int, error) {
	out := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, err
		}
		out[state] = n
	}
	return out, rows.Err()
}

func (s *riverSystem[TTx]) schema() *freshSchema { return s.sc }

// RemoteInsert inserts through a second, insert-only client, as another
// process would.
func (s *riverSystem[TTx]) RemoteInsert(ctx context.Context, first, count int) error {
	if s.remote == nil {
		c, err := river.NewClient(s.driver, &river.Config{Schema: s.schemaName, Logger: s.log})
		if err != nil {
			return err
		}
		s.remote = c
	}
	return insertRiver(ctx, s.remote, s.queue, first, count)
}

func (s *riverSystem[TTx]) Insert(ctx context.Context, first, count int) error {
	return insertRiver(ctx, s.client, s.queue, first, count)
}

// insertRiver inserts jobs first..first+count-1 with InsertManyFast.
func insertRiver[TTx any](ctx context.Context, client *river.Client[TTx], queue string, first, count int) error {
	params := make([]river.InsertManyParams, count)
	opts := &river.InsertOpts{Queue: queue}
	for i := range params {
		params[i] = river.InsertManyParams{Args: riverArgs{Seq: first + i}, InsertOpts: opts}
	}
	n, err := client.InsertManyFast(ctx, params)
	if err == nil && n != count {
		err = fmt.Errorf("river InsertManyFast stored %d of %d jobs", n, count)
	}
	return err
}

func (s *riverSystem[TTx]) Start(ctx context.Context) error {
	// A task counts as done when River reports its completion stored.
	events, unsub := s.client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: 100_000, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	s.unsub, s.subDone = unsub, make(chan struct{})
	if err := s.client.Start(context.WithoutCancel(ctx)); err != nil {
		unsub()
		return err
	}
	s.started = true
	go func() {
		defer close(s.subDone)
		for range events {
			s.rec.completedN(1)
		}
	}()
	return nil
}

func (s *riverSystem[TTx]) Stop(ctx context.Context) error {
	if !s.started {
		return nil
	}
	s.started = false
	err := s.client.Stop(ctx)
	s.unsub()
	<-s.subDone
	return err
}

func (s *riverSystem[TTx]) Verify(ctx context.Context, n int) error {
	counts, err := s.count(ctx)
	if err != nil {
		return err
	}
	var other []string
	for state, c := range counts {
		if state != "completed" {
			other = append(other, fmt.Sprintf("%d %s", c, state))
		}
	}
	if counts["completed"] != n || other != nil {
		return fmt.Errorf("river_job holds %d completed jobs of %d, and %s", counts["completed"], n,
			strings.Join(append(other, "nothing else"), ", "))
	}
	return nil
}

func (s *riverSystem[TTx]) Close() {
	if s.started {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = s.Stop(ctx)
		cancel()
	}
	if s.cleanup != nil {
		s.cleanup()
	}
}
