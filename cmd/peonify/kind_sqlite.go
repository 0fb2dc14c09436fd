package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// sqliteSpec is a stream of kind sqlite: sqlitestream.
type sqliteSpec struct {
	Common   streamCommon       `yaml:",inline"`
	Path     string             `yaml:"path"`      // required: the database file, created if missing
	Lease    yamlfile.Duration  `yaml:"lease"`     // defaults to 30s
	KeepDone *yamlfile.Duration `yaml:"keep_done"` // defaults to 0 (acked tasks are deleted), or 24h for a webhook's store
	KeepDead yamlfile.Duration  `yaml:"keep_dead"` // defaults to 0: dead tasks are kept until purged
	// ResultRetention keeps done tasks with a result or in a workflow;
	// defaults to 24h.
	ResultRetention yamlfile.Duration `yaml:"result_retention"`
	Synchronous     string            `yaml:"synchronous"`  // full (default) or normal
	BusyTimeout     yamlfile.Duration `yaml:"busy_timeout"` // defaults to 5s
}

func (s *sqliteSpec) common() *streamCommon { return &s.Common }

// forgetsDone reports whether the store deletes tasks when they are
// acked: keep_done 0, its default unless a webhook stores into it.
func (s *sqliteSpec) forgetsDone() bool { return s.KeepDone == nil || *s.KeepDone == 0 }

func (s *sqliteSpec) payloadLimit(*resources) (int64, string) {
	return 1_000_000_000 - 1<<20, "SQLite's largest row, less room for the task's other fields"
}

// file is the database file, next to which intakes keep their resend
// logs.
func (s *sqliteSpec) file() string { return s.Path }

// sqliteKind is the kind sqlite, which --store names: the embedded durable
// store: one SQLite file, no server.
func sqliteKind() kind {
	return kind{name: "sqlite", limits: true, tracks: true,
		new: func() streamSpec { return new(sqliteSpec) },
		flag: &storeFlag{name: "store", usage: "the SQLite store `file` (a sqlite stream's path)", hint: "--store FILE (SQLite)",
			spec: func(value string, _ *storeFlags, mustExist bool) (storeSpec, string, string, error) {
				if _, err := os.Stat(value); mustExist && errors.Is(err, os.ErrNotExist) {
					return nil, "", "", fmt.Errorf("no store at %s: check --store (a store is created by `peonify run`, `peonify enqueue` or `peonify demo --store`)", value)
				}
				s := &sqliteSpec{Path: value}
				s.Common.Name = "sqlite"
				return s, "SQLite store " + value, "--store " + shellQuote(value), nil
			}}}
}

func (s *sqliteSpec) check() error {
	if s.Path == "" {
		return yamlfile.Errorf(s.Common.path+".path", "required: the database file (created if missing), e.g. peonify.db")
	}
	switch strings.ToLower(s.Synchronous) {
	case "", "full", "normal":
	default:
		return yamlfile.Errorf(s.Common.path+".synchronous", "%q is not a setting: use full (survives power loss) or normal (survives a process crash, faster)", s.Synchronous)
	}
	_, err := s.config(nil, false)
	return err
}

// config returns the sqlitestream.Config of the entry; watch turns on the
// watch for other processes' commits, which only a processor needs.
func (s *sqliteSpec) config(log *slog.Logger, watch bool) (sqlitestream.Config, error) {
	cfg := sqlitestream.Config{
		Name:            s.Common.Name,
		Lease:           time.Duration(s.Lease),
		KeepDead:        time.Duration(s.KeepDead),
		ResultRetention: time.Duration(s.ResultRetention),
		BusyTimeout:     time.Duration(s.BusyTimeout),
		Logger:          log,
	}
	if s.KeepDone != nil {
		cfg.KeepDone = time.Duration(*s.KeepDone)
	}
	if cfg.Name == "" {
		cfg.Name = "sqlite"
	}
	if strings.EqualFold(s.Synchronous, "normal") {
		cfg.Synchronous = sqlitestream.SynchronousNormal
	}
	if !watch {
		cfg.WatchInterval = -1
	}
	if err := cfg.Validate(); err != nil {
		return cfg, libraryError(s.Common.path, s, err)
	}
	return cfg, nil
}

func (s *sqliteSpec) open(_ context.Context, r *resources) (peonify.Stream, error) {
	cfg, err := s.config(r.log, r.processing)
	if err != nil {
		return nil, err
	}
	st, err := sqlitestream.Open(s.Path, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}
