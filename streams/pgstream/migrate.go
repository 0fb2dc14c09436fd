package pgstream

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string // with {schema} still in place
}

// loadMigrations returns the embedded migrations in version order.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	ms := make([]migration, 0, len(names))
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("pgstream: migration file %s must be named NNN_description.sql", base)
		}
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// SchemaVersion is the schema version that this package's code needs; Migrate
// brings a database up to it.
const SchemaVersion = 3

// Migrate creates or upgrades Peonify's tables in the "public" schema. See
// MigrateSchema.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return MigrateSchema(ctx, pool, "public")
}

// MigrateSchema creates or upgrades Peonify's tables (peonify_tasks,
// peonify_queues and peonify_migrations, with their indexes, sequence,
// functions and trigger) in schema, creating the schema if needed. Call it
// at deployment or at start-up, before the first Poll or Enqueue.
//
// It is idempotent and safe when several processes call it at once: it runs
// in one transaction under an advisory lock, applies only the versions that
// the peonify_migrations table does not list yet, and records each one. A
// database already at a newer version than this code knows is left alone
// and reported with an error, so an old binary never runs against a newer
// schema unnoticed.
func MigrateSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return migrateTo(ctx, pool, schema, SchemaVersion)
}

// migrateTo applies the migrations up to version upTo (tests use it to
// make a schema of an older version).
func migrateTo(ctx context.Context, pool *pgxpool.Pool, schema string, upTo int) error {
	if pool == nil {
		return errors.New("pgstream: Migrate needs a *pgxpool.Pool, got nil")
	}
	if err := validSchema(schema); err != nil {
		return err
	}
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	s := pgx.Identifier{schema}.Sanitize()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// One lock per schema: migrations of different schemas do not wait
		// for each other.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(1885693529, hashtext($1))`, schema); err != nil {
			return fmt.Errorf("pgstream: taking the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+s); err != nil {
			return fmt.Errorf("pgstream: creating schema %s (does the user have CREATE on the database?): %w", schema, err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s+`.peonify_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("pgstream: creating %s.peonify_migrations: %w", schema, err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+s+`.peonify_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("pgstream: reading the schema version: %w", err)
		}
		if last := ms[len(ms)-1].version; current > last {
			return fmt.Errorf("pgstream: schema %s is at version %d but this build knows only up to %d: upgrade Peonify", schema, current, last)
		}
		for _, m := range ms {
			if m.version <= current || m.version > upTo {
				continue
			}
			if _, err := tx.Exec(ctx, strings.ReplaceAll(m.sql, "{schema}", s)); err != nil {
				return fmt.Errorf("pgstream: applying migration %s to schema %s: %w", m.name, schema, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+s+`.peonify_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("pgstream: recording migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}
