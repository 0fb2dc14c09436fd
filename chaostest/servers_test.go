//go:build unix

package chaostest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/internal/testenv"
)

// A server restart stops a server under running processors and starts it
// again. Postgres and RabbitMQ are the shared local servers, restarted with
// Debian's standard commands; their restart scenarios run only with
// PEONIFY_CHAOS=1, after the other packages' tests. Redis and NATS run as
// private servers of the cell, on a port of their own and with their data
// in the cell's directory: a restart then disturbs no other test, and Redis
// runs with the append-only file on, as a deployment that must not lose
// tasks does.

// restarter is what a restart scenario needs of a backend: the address of
// a server it may restart, and how. restart stops the server, keeps it
// down for down, starts it again, waits until it serves, and returns when
// it had stopped.
type restarter struct {
	addr    string
	restart func(t *testing.T, down time.Duration) (stopped time.Time)
}

// skipOrFail skips the test with why, or fails it when
// PEONIFY_REQUIRE_SERVICES=1 asks for everything to run.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
		t.Fatal(why + "; PEONIFY_REQUIRE_SERVICES=1 makes that an error")
	}
	t.Skip(why)
}

// lookPath returns the path of a server's command, or skips the test.
func lookPath(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		skipOrFail(t, "the restart scenario needs "+bin+" on PATH")
	}
	return p
}

// answers reports whether something accepts TCP connections at addr.
func answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitFor polls cond until it holds or within passes, and reports whether
// it held.
func waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond)
	}
	return true
}

// local returns host:port of rawURL if it names this machine, or "".
func local(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
		return u.Host
	}
	return ""
}

// privateServer is a server process that belongs to one cell.
type privateServer struct {
	name  string
	bin   string
	args  []string
	addr  string
	ready func() error // nil once the server serves requests
	cmd   *exec.Cmd
	done  chan struct{}
	out   *streamtest.BoundedBuffer
}

func (s *privateServer) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(s.bin, s.args...)
	s.out = new(streamtest.BoundedBuffer)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", s.name, err)
	}
	done := make(chan struct{})
	s.done = done
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(done) }(s.cmd)
	var last error
	if !waitFor(20*time.Second, func() bool { last = s.ready(); return last == nil }) {
		t.Fatalf("%s did not serve within 20s: %v; its output:\n%s", s.name, last, s.out)
	}
}

// stop stops the server gracefully, as a service manager does.
func (s *privateServer) stop(t *testing.T) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("%s did not stop within 20s of SIGTERM; killed it", s.name)
	}
	s.cmd = nil
}

// restarter returns the restart of the private server.
func (s *privateServer) restarter() *restarter {
	return &restarter{addr: s.addr, restart: func(t *testing.T, down time.Duration) time.Time {
		s.stop(t)
		stopped := time.Now()
		time.Sleep(down) // the outage itself: clients fail meanwhile
		s.start(t)
		return stopped
	}}
}

// privateRedis starts a Redis server of the cell with the append-only file
// on, stopped when the test ends.
func privateRedis(t *testing.T, dir string) *restarter {
	bin := lookPath(t, "redis-server")
	port := testenv.FreePort(t)
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &privateServer{name: "redis-server " + addr, bin: bin, addr: "redis://" + addr + "/0",
		args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
			"--save", "", "--appendonly", "yes", "--appendfsync", "everysec"},
		ready: func() error {
			c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return c.Ping(ctx).Err()
		}}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s.restarter()
}

// privateNATS starts a NATS server of the cell with JetStream storing on
// disk, stopped when the test ends.
func privateNATS(t *testing.T, dir string) *restarter {
	bin := lookPath(t, "nats-server")
	port := testenv.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := &privateServer{name: "nats-server " + addr, bin: bin, addr: "nats://" + addr,
		args:  []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "nats")},
		ready: func() error { return testenv.JetStreamReady("nats://" + addr) }}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s.restarter()
}

// sharedPostgres returns the restart of the local Postgres cluster of the
// tests, found with Debian's cluster tools.
func sharedPostgres(t *testing.T, _ string) *restarter {
	rawURL := testenv.URL(t, "postgres")
	addr := local(rawURL)
	if addr == "" {
		skipOrFail(t, "the restart scenario restarts the local Postgres server, but PEONIFY_TEST_POSTGRES_URL names another host")
	}
	ctl := lookPath(t, "pg_ctlcluster")
	version := postgresVersion(t)
	run := func(action string) error {
		out, err := exec.Command(ctl, "--skip-systemctl-redirect", version, "main", action).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_ctlcluster %s main %s: %v\n%s", version, action, err, out)
		}
		return nil
	}
	ready := func() bool { return answers(addr) && pgReady(rawURL) == nil }
	return &restarter{addr: rawURL, restart: func(t *testing.T, down time.Duration) time.Time {
		t.Cleanup(func() {
			// Leave the server running, whatever happened.
			if !answers(addr) {
				if err := run("start"); err != nil {
					t.Error(err)
				}
			}
			if !waitFor(60*time.Second, ready) {
				t.Error("Postgres does not serve 60s after it was started again")
			}
		})
		if err := run("stop"); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		time.Sleep(down)
		if err := run("start"); err != nil {
			t.Fatal(err)
		}
		if !waitFor(60*time.Second, ready) {
			t.Fatal("Postgres does not serve 60s after it was started again")
		}
		return stopped
	}}
}

// postgresVersion returns the version of the local cluster: the one
// directory under Debian's /etc/postgresql.
func postgresVersion(t *testing.T) string {
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil {
		skipOrFail(t, "the restart scenario needs Debian's Postgres cluster layout: "+err.Error())
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) != 1 {
		skipOrFail(t, fmt.Sprintf("the restart scenario restarts the one local Postgres cluster, but there are %d: %v", len(versions), versions))
	}
	return versions[0]
}

// pgReady returns nil once Postgres accepts queries.
func pgReady(rawURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return pingPostgres(ctx, rawURL)
}

// sharedRabbitMQ returns the restart of the local RabbitMQ broker's
// application, by rabbitmqctl stop_app and start_app.
func sharedRabbitMQ(t *testing.T, _ string) *restarter {
	rawURL := testenv.URL(t, "amqp")
	if local(rawURL) == "" {
		skipOrFail(t, "the restart scenario restarts the local RabbitMQ broker, but PEONIFY_TEST_AMQP_URL names another host")
	}
	ctl := lookPath(t, "rabbitmqctl")
	run := func(action string) error {
		out, err := exec.Command(ctl, action).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rabbitmqctl %s: %v\n%s", action, err, out)
		}
		return nil
	}
	ready := func() bool {
		conn, err := amqp.DialConfig(rawURL, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return &restarter{addr: rawURL, restart: func(t *testing.T, down time.Duration) time.Time {
		t.Cleanup(func() {
			if err := run("start_app"); err != nil {
				t.Error(err)
			}
			if !waitFor(60*time.Second, ready) {
				t.Error("RabbitMQ does not accept connections 60s after start_app")
			}
		})
		if err := run("stop_app"); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		time.Sleep(down)
		if err := run("start_app"); err != nil {
			t.Fatal(err)
		}
		if !waitFor(60*time.Second, ready) {
			t.Fatal("RabbitMQ does not accept connections 60s after start_app")
		}
		return stopped
	}}
}

// exitCode returns the exit status of a finished command, or -1 if a
// signal ended it.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1
		}
		return ee.ExitCode()
	}
	return -2
}
