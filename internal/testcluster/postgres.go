//go:build linux

package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/peonify/peonify/internal/testenv"
)

// PostgresBinDirEnv names the environment variable that may give the
// directory of the Postgres server's programs (initdb, pg_basebackup,
// postgres). Without it they are looked for on PATH and then in the
// usual places of Debian's packages.
const PostgresBinDirEnv = "PEONIFY_TEST_POSTGRES_BIN"

// PostgresOptions configures a primary with a streaming replica.
type PostgresOptions struct {
	// Database is the database created on the primary (and so on the
	// standby). Defaults to "peonify".
	Database string

	// Synchronous, when not empty, makes replication synchronous: the
	// primary lists the standby in synchronous_standby_names and sets
	// synchronous_commit to this value ("on": a commit waits until the
	// standby has flushed it; "remote_apply": until the standby has
	// applied it, so that it is visible there). Empty means asynchronous
	// replication: a commit returns once the primary has it, and the
	// standby catches up a moment later.
	Synchronous string
}

// Postgres is a primary and a hot standby streaming from it, each a
// postgres process of the test's own on a port of its own. Their data
// directories live in a temporary directory of their own, removed with
// the processes when the test ends.
//
// For speed the servers run with fsync off: a failover here stops a
// process, not the machine, so what it shows does not depend on fsync; a
// crash of the machine would lose more.
type Postgres struct {
	// Primary is the server that takes writes at the start.
	Primary *PostgresNode
	// Standby replays the primary's write-ahead log, read-only until
	// promoted.
	Standby *PostgresNode

	database string
	bin      string
}

// PostgresNode is one server of a Postgres pair.
type PostgresNode struct {
	// Name is "primary" or "standby".
	Name string
	// Port is the TCP port the server listens on, on 127.0.0.1.
	Port int

	dir  string // its data directory
	bin  string
	cred *syscall.Credential
	db   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	out  *pgLogBuffer
}

// StartPostgres starts a primary, creates the database, copies it with
// pg_basebackup into a standby that streams from it, and waits until the
// standby streams (and, with Synchronous, until it is the synchronous
// standby). Everything is stopped and removed when t ends.
//
// It needs initdb, pg_basebackup and postgres: without them the test is
// skipped, or fails when PEONIFY_REQUIRE_SERVICES=1. Postgres refuses to
// run as root; run as root, the servers run as the "postgres" user.
func StartPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	if opts.Database == "" {
		opts.Database = "peonify"
	}
	switch opts.Synchronous {
	case "", "on", "remote_write", "remote_apply":
	default:
		t.Fatalf("testcluster: PostgresOptions.Synchronous is %q: want \"\", \"on\", \"remote_write\" or \"remote_apply\"", opts.Synchronous)
	}
	bin := postgresBinDir(t)
	root, cred := pgTempDir(t, "peonify-pg-")
	p := &Postgres{database: opts.Database, bin: bin}
	p.Primary = &PostgresNode{Name: "primary", Port: testenv.FreePort(t), dir: filepath.Join(root, "primary"), bin: bin, cred: cred, db: opts.Database}
	p.Standby = &PostgresNode{Name: "standby", Port: testenv.FreePort(t), dir: filepath.Join(root, "standby"), bin: bin, cred: cred, db: opts.Database}
	t.Cleanup(func() {
		p.Standby.stop(t, syscall.SIGQUIT)
		p.Primary.stop(t, syscall.SIGQUIT)
	})

	pr := p.Primary
	pr.run(t, "initdb", "-D", pr.dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	hba := "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(pr.dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		if err := os.Chown(filepath.Join(pr.dir, "pg_hba.conf"), int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	pr.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pr.exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{opts.Database}.Sanitize()); err != nil {
		t.Fatalf("testcluster: creating database %s on the primary: %v", opts.Database, err)
	}

	sb := p.Standby
	// -R writes the standby's primary_conninfo and standby.signal; -X
	// stream copies the log written during the copy.
	sb.run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(pr.Port), "-U", "postgres",
		"-D", sb.dir, "-R", "-X", "stream", "--no-sync", "-c", "fast")
	sb.start(t)
	p.waitStreaming(t, "")
	if opts.Synchronous != "" {
		p.SetSynchronous(t, opts.Synchronous)
	}
	return p
}

// URL returns the multi-host connection string of the pair, primary
// first, with target_session_attrs=read-write: a client connects to
// whichever server takes writes, and after a failover reconnects to the
// promoted standby by itself.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write&connect_timeout=5",
		p.Primary.Port, p.Standby.Port, p.database)
}

// URL returns the connection string of this server alone.
func (n *PostgresNode) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=5", n.Port, n.db)
}

// Running reports whether the server's process is running.
func (n *PostgresNode) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done != nil && !closed(n.done)
}

// SetSynchronous switches the primary's replication, while it runs, to
// synchronous with synchronous_commit mode ("on", "remote_write",
// "remote_apply"), or to asynchronous when mode is empty. Switching to
// synchronous waits until the standby is the synchronous one. The
// settings go to the primary's postgresql.auto.conf, which the standby
// does not have: once promoted, it runs alone and asynchronous, and its
// commits do not wait for a standby it does not have.
func (p *Postgres) SetSynchronous(t testing.TB, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, commit := "*", mode
	if mode == "" {
		names, commit = "", "on"
	}
	for _, q := range []string{
		"ALTER SYSTEM SET synchronous_standby_names = " + pgQuote(names),
		"ALTER SYSTEM SET synchronous_commit = " + pgQuote(commit),
		"SELECT pg_reload_conf()",
	} {
		if err := p.Primary.exec(ctx, "postgres", q); err != nil {
			t.Fatalf("testcluster: %s on the primary: %v", q, err)
		}
	}
	want := "sync"
	if mode == "" {
		want = "async"
	}
	p.waitStreaming(t, want)
}

// waitStreaming waits until the primary streams to the standby and, if
// syncState is not empty, pg_stat_replication.sync_state is syncState.
func (p *Postgres) waitStreaming(t testing.TB, syncState string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var state, sync string
		err := p.Primary.query(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT state, sync_state FROM pg_stat_replication LIMIT 1").Scan(&state, &sync)
		})
		cancel()
		if err == nil && state == "streaming" && (syncState == "" || sync == syncState) {
			return
		}
		last = fmt.Sprintf("state %q, sync_state %q, error %v", state, sync, err)
		if time.Now().After(deadline) {
			t.Fatalf("testcluster: the standby does not stream from the primary within a minute (%s); standby's log:\n%s",
				last, p.Standby.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ReplicationLag returns the primary's last reported write, flush and
// replay lag of the standby (zero when the standby is up to date).
func (p *Postgres) ReplicationLag(ctx context.Context) (write, flush, replay time.Duration, err error) {
	err = p.Primary.query(ctx, func(c *pgx.Conn) error {
		var w, f, r int64
		err := c.QueryRow(ctx, `SELECT (EXTRACT(epoch FROM COALESCE(write_lag, '0'))*1e6)::bigint, (EXTRACT(epoch FROM COALESCE(flush_lag, '0'))*1e6)::bigint,
			(EXTRACT(epoch FROM COALESCE(replay_lag, '0'))*1e6)::bigint FROM pg_stat_replication LIMIT 1`).Scan(&w, &f, &r)
		write, flush, replay = time.Duration(w)*time.Microsecond, time.Duration(f)*time.Microsecond, time.Duration(r)*time.Microsecond
		return err
	})
	return
}

// StopPrimary stops the primary at once, as a crash would: with an
// immediate shutdown (SIGQUIT), which writes nothing more and flushes
// nothing, and returns when its process has exited. What the standby had
// not received is gone with it.
func (p *Postgres) StopPrimary(t testing.TB) {
	t.Helper()
	p.Primary.stop(t, syscall.SIGQUIT)
}

// Promote makes the standby a primary (pg_promote) and waits until it
// takes writes. Stop the primary first: two primaries would each take
// writes the other does not have.
func (p *Postgres) Promote(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ok bool
	err := p.Standby.query(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT pg_promote(true, 50)").Scan(&ok)
	})
	if err == nil && !ok {
		err = errors.New("pg_promote returned false: the promotion did not finish within 50s")
	}
	if err != nil {
		t.Fatalf("testcluster: promoting the standby: %v; its log:\n%s", err, p.Standby.out.String())
	}
	for {
		var inRecovery bool
		err := p.Standby.query(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		})
		if err == nil && !inRecovery {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("testcluster: the promoted standby is still in recovery after a minute (%v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Failover stops the primary as a crash would, then promotes the standby,
// and returns when the old standby takes writes.
func (p *Postgres) Failover(t testing.TB) {
	t.Helper()
	p.StopPrimary(t)
	p.Promote(t)
}

// Log returns what the server wrote to its standard error (the last part
// of it, if it wrote much).
func (n *PostgresNode) Log() string { return n.out.String() }

// run runs one of the Postgres programs as the servers' user and fails
// the test if it fails.
func (n *PostgresNode) run(t testing.TB, prog string, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(n.bin, prog), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred}
	cmd.Dir = filepath.Dir(n.dir)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testcluster: %s %v: %v\n%s", prog, args, err, out)
	}
}

// start starts the server on its data directory and waits until it
// accepts connections.
func (n *PostgresNode) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(filepath.Join(n.bin, "postgres"), "-D", n.dir,
		"-c", "port="+strconv.Itoa(n.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "fsync=off", // see Postgres: a stopped process, not a crashed machine
		"-c", "wal_level=replica",
		"-c", "max_wal_senders=4",
		"-c", "hot_standby=on",
		"-c", "max_connections=100",
		"-c", "shared_buffers=32MB",
		"-c", "cluster_name=peonify-"+n.Name,
	)
	n.out = &pgLogBuffer{}
	cmd.Stdout, cmd.Stderr = n.out, n.out
	cmd.Dir = n.dir
	// A postmaster whose test binary died would otherwise run on: the
	// signal it gets then is an immediate shutdown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Start(); err != nil {
		t.Fatalf("testcluster: starting the %s: %v", n.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()

	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := n.queryDB(ctx, "postgres", func(c *pgx.Conn) error { return c.Ping(ctx) })
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("testcluster: the %s exited at start (%v); its log:\n%s", n.Name, cmd.ProcessState, n.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testcluster: the %s does not accept connections within a minute (%v); its log:\n%s", n.Name, err, n.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends the postmaster sig (SIGQUIT: immediate shutdown; SIGINT:
// fast) if it runs, and waits until it has exited, killing it after 30s.
func (n *PostgresNode) stop(t testing.TB, sig syscall.Signal) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return
	case <-time.After(30 * time.Second):
	}
	// Its children end on their own once the postmaster is gone.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	t.Errorf("testcluster: the %s did not exit within 30s of %v; killed it. Its log:\n%s", n.Name, sig, n.out.String())
}

// query runs fn on a connection of its own to the server's database db.
func (n *PostgresNode) query(ctx context.Context, fn func(*pgx.Conn) error) error {
	return n.queryDB(ctx, n.db, fn)
}

func (n *PostgresNode) queryDB(ctx context.Context, db string, fn func(*pgx.Conn) error) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", n.Port, db))
	if err != nil {
		return err
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return fn(c)
}

// exec runs sql in database db.
func (n *PostgresNode) exec(ctx context.Context, db, sql string) error {
	return n.queryDB(ctx, db, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql)
		return err
	})
}

// pgQuote returns s as an SQL string literal.
func pgQuote(s string) string {
	var b bytes.Buffer
	b.WriteByte('\'')
	for _, r := range s {
		if r == '\'' {
			b.WriteByte('\'')
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
}

// postgresBinDir returns the directory of the Postgres programs, or skips
// the test (fails it when PEONIFY_REQUIRE_SERVICES=1).
func postgresBinDir(t testing.TB) string {
	t.Helper()
	has := func(dir string) bool {
		for _, p := range []string{"initdb", "pg_basebackup", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(PostgresBinDirEnv); dir != "" {
		if !has(dir) {
			t.Fatalf("testcluster: %s=%s has no initdb, pg_basebackup and postgres", PostgresBinDirEnv, dir)
		}
		return dir
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p)
	}
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		for i := len(dirs) - 1; i >= 0; i-- { // the newest version
			if has(dirs[i]) {
				return dirs[i]
			}
		}
	}
	pgSkipOrFail(t, "a Postgres pair needs initdb, pg_basebackup and postgres: put them on PATH or set "+PostgresBinDirEnv+" to their directory")
	return ""
}

// pgTempDir makes a temporary directory, removed when t ends, that the
// servers' user owns, and returns it with the credential to run the
// servers with: nil unless the test runs as root, which Postgres refuses,
// and then the "postgres" user's. (t.TempDir is not used: it lies in a
// directory only its creator can enter.)
func pgTempDir(t testing.TB, prefix string) (string, *syscall.Credential) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testcluster: removing %s: %v", dir, err)
		}
	})
	if os.Geteuid() != 0 {
		return dir, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		pgSkipOrFail(t, "the test runs as root, and Postgres refuses to: it needs a \"postgres\" user to run the servers as ("+err.Error()+")")
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		t.Fatalf("testcluster: user postgres has uid %q, gid %q", u.Uid, u.Gid)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// closed reports whether done is closed: whether the process whose exit
// closes it has exited.
func closed(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// pgSkipOrFail skips the test with why, or fails it when
// PEONIFY_REQUIRE_SERVICES=1 asks for everything to run.
func pgSkipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal("testcluster: " + why + "; PEONIFY_REQUIRE_SERVICES=1 makes that an error")
	}
	t.Skip("testcluster: " + why)
}

// pgLogBuffer holds what a server writes, the last 64 KiB of it; safe for
// concurrent use.
type pgLogBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *pgLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 64<<10; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *pgLogBuffer) String() string {
	if b == nil {
		return ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
