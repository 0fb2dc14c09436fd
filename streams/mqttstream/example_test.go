package mqttstream_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/mqttstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// An intake stores the messages of two topic filters in an embedded
// store, and a processor runs them. It needs a broker, so it has no
// output to check.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	store, err := sqlitestream.Open("tasks.db", sqlitestream.Config{})
	if err != nil {
		log.Fatal(err)
	}
	host, _ := os.Hostname()
	intake, err := mqttstream.New(store, mqttstream.Config{
		Servers:  []string{"mqtt://localhost:1883"},
		ClientID: "peonify-" + host,
		Routes: map[string]string{
			"orders/created":   "order-created",
			"devices/+/alarms": "device-alarm",
		},
		ShareGroup: "peonify",
	})
	if err != nil {
		log.Fatal(err)
	}
	intakeDone := make(chan error, 1)
	go func() { intakeDone <- intake.Run(ctx) }()

	p, err := peonify.New(peonify.Config{})
	if err != nil {
		log.Fatal(err)
	}
	err = p.AddTaskList(peonify.TaskList{
		"order-created": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			log.Printf("order %s: %s", t.ID, t.Payload)
			return nil
		}),
		"device-alarm": peonify.HandlerFunc(func(ctx context.Context, t *peonify.Task) error {
			log.Printf("alarm from %s: %s", t.Headers[mqttstream.HeaderTopic], t.Payload)
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.AddStream(store); err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	if err := <-intakeDone; err != nil {
		log.Fatal(err)
	}
}
