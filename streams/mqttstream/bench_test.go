package mqttstream

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/intaketest"
)

// BenchmarkIntake measures messages per second from publication to
// stored task, into an in-memory store. The messages are published at
// QoS 1 by 8 goroutines of a Go client in this process.
func BenchmarkIntake(b *testing.B) {
	benchmarkIntake(b, intaketest.NewMem(b))
}

// BenchmarkIntakeSQLite is BenchmarkIntake into the durable embedded
// store.
func BenchmarkIntakeSQLite(b *testing.B) {
	benchmarkIntake(b, intaketest.OpenSQLite(b, filepath.Join(b.TempDir(), "tasks.db")))
}

func benchmarkIntake(b *testing.B, store peonify.Enqueuer) {
	url := broker(b)
	topic := testTopic(b)
	cfg := testConfig(b, url, map[string]string{topic: "t"})
	cfg.Logger = slog.New(slog.DiscardHandler)
	in, _ := start(b, store, cfg)
	pub := publisher(b, url)
	payload := []byte(`{"device":"sensor-17","reading":21.5}`)
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				// Stay well under the broker's queue limit for one
				// session (Mosquitto's max_queued_messages, 1000 by
				// default), beyond which it drops messages for a
				// subscriber that falls behind.
				for next.Load()-int64(in.Stats().Enqueued) > 500 {
					time.Sleep(100 * time.Microsecond)
				}
				_, err := pub.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for in.Stats().Enqueued < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d messages stored 10s after the last was published", in.Stats().Enqueued, b.N)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// publisher connects a plain MQTT 5 client for publishing.
func publisher(b *testing.B, brokerURL string) *paho.Client {
	u, err := url.Parse(brokerURL)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		b.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: unique("peonify-bench-pub-")})
	if _, err := c.Connect(context.Background(), &paho.Connect{ClientID: unique("peonify-bench-pub-"), CleanStart: true, KeepAlive: 30}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}
