package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/peonify/peonify/streams/pgstream"
)

func migrateCommand() *command {
	return &command{
		name:    "migrate",
		summary: "create or upgrade Peonify's tables in Postgres",
		usage:   "migrate --postgres URL [--schema NAME]",
		about: `Migrate creates Peonify's tables in a Postgres database, or upgrades them to
the version this binary needs. It is idempotent and safe to run from several
machines at once. Run it at deployment, before the processors start (or set
migrate: true on a postgres stream of peonify.yaml).`,
		example: `peonify migrate --postgres "postgres://app:secret@db:5432/app"
peonify migrate --postgres "$DATABASE_URL" --schema jobs`,
		run: (*cli).migrate,
	}
}

func (c *cli) migrate(cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	pgURL := fs.String("postgres", "", "the database `URL`, e.g. postgres://user:password@host:5432/db")
	schema := fs.String("schema", "public", "the `schema` that holds the tables (created if missing)")
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	if *pgURL == "" {
		return usagef("--postgres is required: give the database URL")
	}
	if err := (pgstream.Config{Schema: *schema}).Validate(); err != nil {
		return usagef("--schema %q is not a lower-case SQL identifier of at most 40 bytes", *schema)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	r := newResources(slog.New(slog.DiscardHandler), false)
	defer r.close()
	pool, err := r.pool(ctx, *pgURL, 2)
	if err != nil {
		return err
	}
	if err := pgstream.MigrateSchema(ctx, pool, *schema); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "schema %q of %s is at version %d\n", *schema, redactURL(*pgURL), pgstream.SchemaVersion)
	return nil
}
