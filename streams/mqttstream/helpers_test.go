package mqttstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
	"github.com/peonify/peonify/internal/testenv"
	"github.com/peonify/peonify/streams/memstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// broker returns the test broker's URL and skips (or fails, under
// PEONIFY_REQUIRE_SERVICES=1) when there is none or when mosquitto_pub,
// which the tests publish with, is missing.
func broker(t testing.TB) string {
	t.Helper()
	u := testenv.URL(t, "mqtt")
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		msg := "needs the mosquitto_pub command (Debian package mosquitto-clients) to publish test messages"
		if os.Getenv("PEONIFY_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg + "; PEONIFY_REQUIRE_SERVICES=1 makes it an error")
		}
		t.Skip(msg)
	}
	return u
}

// unique returns a name no other test run uses.
func unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

// testTopic returns a topic prefix of this test alone.
func testTopic(t testing.TB) string {
	return unique("peonify-test/" + nonWord.ReplaceAllString(t.Name(), "-") + "/")
}

// publish publishes one message at QoS 1 with mosquitto_pub; args add
// options such as "-D", "publish", "user-property", "k", "v". With lines,
// each line of payload is a message of its own.
func publish(t testing.TB, brokerURL, topic string, payload []byte, lines bool, args ...string) {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	if port == "" {
		port = "1883"
	}
	cmdArgs := []string{"-V", "mqttv5", "-h", u.Hostname(), "-p", port, "-q", "1", "-t", topic}
	if u.User != nil {
		cmdArgs = append(cmdArgs, "-u", u.User.Username())
		if pw, ok := u.User.Password(); ok {
			cmdArgs = append(cmdArgs, "-P", pw)
		}
	}
	if lines {
		cmdArgs = append(cmdArgs, "-l")
	} else {
		cmdArgs = append(cmdArgs, "-s")
	}
	cmd := exec.Command("mosquitto_pub", append(cmdArgs, args...)...)
	cmd.Stdin = bytes.NewReader(payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
}

// testConfig is a configuration for the test broker with a new client ID,
// a short session and quick retries.
func testConfig(t testing.TB, brokerURL string, routes map[string]string) Config {
	return Config{
		Servers:       []string{brokerURL},
		ClientID:      unique("peonify-test-"),
		Routes:        routes,
		SessionExpiry: time.Minute,
		MinBackoff:    10 * time.Millisecond,
		MaxBackoff:    200 * time.Millisecond,
		Logger:        intaketest.Logger(t),
	}
}

// start runs an intake until the returned stop is called (or the test
// ends), after it has subscribed.
func start(t testing.TB, store peonify.Enqueuer, cfg Config) (in *Intake, stop func()) {
	t.Helper()
	in, err := New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- in.Run(ctx) }()
	var stopped atomic.Bool
	stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-in.Ready():
	case err := <-ran:
		stopped.Store(true)
		t.Fatalf("Run ended before subscribing: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the intake did not subscribe within 15s")
	}
	return in, stop
}

// all returns every task a store holds, by ID.
func all(t *testing.T, s *memstream.Stream) map[string]peonify.Task {
	t.Helper()
	out := make(map[string]peonify.Task)
	for _, st := range peonify.States {
		infos, err := s.List(context.Background(), peonify.ListOptions{State: st, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range infos {
			out[info.Task.ID] = info.Task
		}
	}
	return out
}
