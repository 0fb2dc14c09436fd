package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/pgstream"
)

// postgresSpec is a stream of kind postgres: pgstream.
type postgresSpec struct {
	Common   streamCommon      `yaml:",inline"`
	URL      string            `yaml:"url"`       // required: postgres://user:password@host:5432/db
	Queue    string            `yaml:"queue"`     // defaults to "default"
	Schema   string            `yaml:"schema"`    // defaults to public
	Lease    yamlfile.Duration `yaml:"lease"`     // defaults to 30s
	KeepDone yamlfile.Duration `yaml:"keep_done"` // defaults to 0: acked tasks are deleted
	KeepDead yamlfile.Duration `yaml:"keep_dead"` // defaults to 7 days
	// ResultRetention keeps done tasks with a result or in a workflow;
	// defaults to 24h.
	ResultRetention yamlfile.Duration `yaml:"result_retention"`
	NoListen        bool              `yaml:"no_listen"`   // for poolers in transaction mode
	SyncCommit      bool              `yaml:"sync_commit"` // claims and acks wait for the disk
	Migrate         bool              `yaml:"migrate"`     // create or upgrade the tables at start-up
	MaxConns        int32             `yaml:"max_conns"`   // pool size for this URL; defaults to pgx's default
}

func (s *postgresSpec) common() *streamCommon { return &s.Common }

func (s *postgresSpec) forgetsDone() bool { return s.KeepDone == 0 }

func (s *postgresSpec) payloadLimit(*resources) (int64, string) {
	return 1<<30 - 1<<20, "Postgres's largest value and message, less room for the task's other fields"
}

// postgresKind is the kind postgres, which --postgres (and --schema)
// names: a queue in a Postgres table, shared by any number of processors.
func postgresKind() kind {
	return kind{name: "postgres", limits: true, tracks: true,
		new: func() streamSpec { return new(postgresSpec) },
		flag: queueFlag("postgres", "a Postgres database `URL` (with --queue)", "default", "queue",
			[]flagDef{{"schema", "public", "the Postgres `schema`, with --postgres"}},
			func(url, queue string, sf *storeFlags) storeSpec {
				return &postgresSpec{URL: url, Queue: queue, Schema: sf.value("schema")}
			})}
}

func (s *postgresSpec) check() error {
	if s.URL == "" {
		return yamlfile.Errorf(s.Common.path+".url", "required: the database address, e.g. postgres://user:${PGPASSWORD}@db:5432/app")
	}
	if _, err := pgxpool.ParseConfig(s.URL); err != nil {
		return yamlfile.Errorf(s.Common.path+".url", "not a Postgres URL or connection string: %s", redactErr(err, s.URL))
	}
	if s.Queue == "" {
		s.Queue = "default"
	}
	if s.Schema == "" {
		s.Schema = "public"
	}
	if s.MaxConns < 0 {
		return yamlfile.Errorf(s.Common.path+".max_conns", "must not be negative (0 means the driver's default)")
	}
	if s.Common.Name == "" {
		s.Common.Name = "postgres:" + s.Queue
	}
	return libraryError(s.Common.path, s, s.config(nil, nil).Validate())
}

func (s *postgresSpec) config(log *slog.Logger, l *pgstream.Listener) pgstream.Config {
	return pgstream.Config{
		Queue:           s.Queue,
		Schema:          s.Schema,
		Lease:           time.Duration(s.Lease),
		KeepDone:        time.Duration(s.KeepDone),
		KeepDead:        time.Duration(s.KeepDead),
		ResultRetention: time.Duration(s.ResultRetention),
		NoListen:        s.NoListen,
		SyncCommit:      s.SyncCommit,
		Listener:        l,
		Logger:          log,
	}
}

func (s *postgresSpec) open(ctx context.Context, r *resources) (peonify.Stream, error) {
	pool, err := r.pool(ctx, s.URL, s.MaxConns)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	if s.Migrate && r.processing {
		if err := pgstream.MigrateSchema(ctx, pool, s.Schema); err != nil {
			return nil, fmt.Errorf("%s: migrate: %w", s.Common.path, err)
		}
	} else if err := checkSchema(ctx, pool, s.Schema); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	var l *pgstream.Listener
	if !s.NoListen && r.processing {
		if l, err = r.listener(pool, s.URL, s.Schema); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Common.path, err)
		}
	}
	st, err := pgstream.New(pool, s.config(r.log, l))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}

// checkSchema tells the operator to migrate when the tables are missing.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	var found bool
	err := pool.QueryRow(ctx, `SELECT to_regclass(quote_ident($1) || '.peonify_tasks') IS NOT NULL`, schema).Scan(&found)
	if err != nil {
		return fmt.Errorf("checking for the peonify tables: %w", err)
	}
	if !found {
		flag := ""
		if schema != "public" {
			flag = " --schema " + schema
		}
		return fmt.Errorf("the peonify tables are missing in schema %q: run `peonify migrate --postgres URL%s` once (or set migrate: true in the config file)", schema, flag)
	}
	return nil
}
