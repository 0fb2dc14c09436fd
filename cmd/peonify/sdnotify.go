package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file tells systemd how the daemon is doing, for a unit of
// Type=notify (see deploy/systemd/peonify.service): READY=1 once the
// stores are connected and the intakes listen (when /readyz would first
// answer 200), STOPPING=1 when the drain begins, and, when the unit sets
// WatchdogSec=, WATCHDOG=1 at half that interval for as long as the
// processor answers (a hung processor gets no ping, and systemd restarts
// it). It speaks the sd_notify datagram protocol itself (see
// sd_notify(3)): one datagram of newline-separated VAR=value lines to the
// unix socket named by $NOTIFY_SOCKET. Without $NOTIFY_SOCKET, as
// everywhere but under systemd, it does nothing.

// sdNotifier sends sd_notify messages to the service manager.
type sdNotifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration // WATCHDOG_USEC, 0 when the unit has no watchdog
}

// newSDNotifier reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID,
// and unsets them, so that the commands of exec tasks cannot talk to
// systemd on the daemon's behalf. It returns nil when the process is not
// run by a service manager that listens.
func newSDNotifier() (*sdNotifier, error) {
	socket := os.Getenv("NOTIFY_SOCKET")
	usec, pid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		_ = os.Unsetenv(k)
	}
	if socket == "" {
		return nil, nil
	}
	name := socket
	switch {
	case strings.HasPrefix(socket, "@"): // the abstract namespace
		name = "\x00" + socket[1:]
	case !strings.HasPrefix(socket, "/"):
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q is not a unix socket path (vsock is not supported): run peonify with Type=notify under systemd, or unset NOTIFY_SOCKET", socket)
	}
	n := &sdNotifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
	if usec != "" && (pid == "" || pid == strconv.Itoa(os.Getpid())) {
		us, err := strconv.ParseUint(usec, 10, 63)
		if err != nil || us == 0 {
			return nil, fmt.Errorf("WATCHDOG_USEC=%q is not a positive number of microseconds: check WatchdogSec= in the unit", usec)
		}
		n.watchdog = time.Duration(us) * time.Microsecond
	}
	return n, nil
}

// notify sends one message: lines of VAR=value.
func (n *sdNotifier) notify(lines ...string) error {
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// sdPollInterval is how often the daemon checks for readiness before it
// tells systemd it is ready.
const sdPollInterval = 50 * time.Millisecond

// notifySystemd tells systemd about the daemon's run, whose context is
// ctx, until the returned function is called (when run returns): READY=1
// as soon as notReady finds nothing wrong, STOPPING=1 when ctx ends, and
// the watchdog's pings meanwhile. Errors are logged: systemd's own
// timeouts report a daemon that cannot reach it.
func (d *daemon) notifySystemd(ctx context.Context) (stop func()) {
	n, err := newSDNotifier()
	if err != nil {
		d.log.Error("peonify: "+err.Error(), "notify_socket", "unusable")
		return func() {}
	}
	if n == nil {
		return func() {}
	}
	send := func(lines ...string) {
		if err := n.notify(lines...); err != nil {
			d.log.Warn("peonify: cannot tell systemd how the daemon is doing", "err", err, "message", strings.Join(lines, " "))
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(sdPollInterval)
		defer t.Stop()
		for {
			if problems := notReady(d.p.Stats(), d.ready, false); len(problems) == 0 {
				send("READY=1", "STATUS=running: stores connected, intakes listening")
				d.log.Info("peonify: told systemd the daemon is ready")
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			send("STOPPING=1", "STATUS=draining: "+d.shutdownStatus())
		case <-done:
		}
	})
	if n.watchdog > 0 {
		wg.Go(func() {
			t := time.NewTicker(n.watchdog / 2)
			defer t.Stop()
			for {
				// The ping is tied to liveness: Stats takes the
				// processor's locks, so a processor that is stuck stops
				// the pings, and systemd restarts the service.
				_ = d.p.Stats()
				send("WATCHDOG=1")
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		})
	}
	return sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
}

// shutdownStatus describes the drain's bounds for systemctl status.
func (d *daemon) shutdownStatus() string {
	b := shutdownBounds(d.cfg)
	return fmt.Sprintf("running tasks get up to %s, the whole shutdown at most %s", b.grace, b.total)
}

// bounds of a config's shutdown, for unit files and manifests.
type bounds struct {
	grace   time.Duration // processor.shutdown_grace, defaulted
	timeout time.Duration // processor.shutdown_timeout, defaulted: Run's whole drain
	total   time.Duration // from SIGTERM to exit, at most
}

// shutdownBounds returns how long the daemon of cfg takes at most from
// SIGTERM to its exit: the processor's drain (processor.shutdown_timeout,
// which bounds the grace of running tasks, the hand-back of the others,
// the acks and the closing of the streams), the moment Run gives a stream
// past it, the admin server's wait for scrapes in flight, and with tracing
// on the export of the last spans (tracing.flush_timeout). A
// supervisor's stop timeout (systemd's TimeoutStopSec, Kubernetes'
// terminationGracePeriodSeconds) must be above total, or it kills the
// daemon mid-drain.
func shutdownBounds(cfg *config) bounds {
	pc := cfg.processor
	timeout := pc.ShutdownTimeout
	if timeout == 0 {
		timeout = max(28*time.Second, pc.ShutdownGrace+8*time.Second) // as peonify.Config does
	}
	grace := pc.ShutdownGrace
	if grace == 0 {
		grace = min(20*time.Second, timeout-min(timeout*3/10, 8*time.Second))
	}
	total := timeout + closeSlack
	if cfg.http.Listen != "" {
		total += adminStopTimeout
	}
	if cfg.tracing.on {
		total += cfg.tracing.flushTimeout // the last spans are exported after the drain
	}
	return bounds{grace: grace, timeout: timeout, total: total}
}

// closeSlack is how long past processor.shutdown_timeout Run waits for a
// stream's Close (the root package's closeSlack).
const closeSlack = 250 * time.Millisecond
