//go:build unix

package chaostest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/streamtest"
	"github.com/peonify/peonify/streams/webhookstream"
)

// scenarioIntake puts a webhook intake (webhookstream, GitHub's signing)
// in front of the cell's queue, behind a proxy that cuts every third
// answer mid-reply and resets the connection: the request has arrived and
// been handled, the sender sees only the reset. The sender sends again
// until it gets an answer, as GitHub does; the task must run at least
// once, and a resend the store still holds is answered as a duplicate
// (Peonify-Duplicate) rather than stored again, except on a store that
// cannot refuse a duplicate ID (RabbitMQ), whose duplicates are bounded by
// the cut answers. Then requests whose connection drops while the body is
// partly sent: nothing of them is stored, and each, sent again whole, is a
// new task (202 Accepted) with the whole body.
func scenarioIntake(c *cell) {
	const secret = "chaos intake secret"
	store := &countingStore{enq: c.st.enq, calls: make(map[string][]string)}
	hooks, err := webhookstream.New(store, webhookstream.Config{Routes: map[string]webhookstream.Route{
		"/hooks/github": {Type: "chaos", JSON: true,
			Verifier: webhookstream.GitHub{Secrets: []webhookstream.Secret{webhookstream.NewSecret(secret)}}},
	}})
	if err != nil {
		c.t.Fatal(err)
	}
	srv := httptest.NewServer(hooks)
	defer srv.Close()
	px := streamtest.NewProxy(c.t, strings.TrimPrefix(srv.URL, "http://"))
	client := &http.Client{Timeout: 10 * time.Second}

	body := []byte(`{"ms":10}`)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	const total = 60
	var cut, resent, dups int
	var cutIDs []string
	for i := range total {
		id := fmt.Sprintf("hook-%04d", i)
		if i%3 == 0 {
			px.ResetMidReply(1)
		}
		for try := 0; ; try++ {
			req := githubPush(c.t, px.Addr(), body, sig, id)
			req.Close = true // a connection per delivery, as GitHub's
			resp, err := client.Do(req)
			if err != nil {
				if try == 0 {
					cut++
					cutIDs = append(cutIDs, "chaos:"+id)
				}
				if try == 10 {
					c.t.Fatalf("delivery %s failed 10 times: %v", id, err)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				c.t.Fatalf("delivery %s: %s %s", id, resp.Status, msg)
			}
			if try > 0 {
				resent++
				if resp.Header.Get("Peonify-Duplicate") != "" {
					dups++
				}
			}
			break
		}
		c.mu.Lock()
		c.enqueued = append(c.enqueued, "chaos:"+id) // the route's IDPrefix is its Type and ":"

		c.mu.Unlock()
	}
	// Requests cut while their body is sent (cutWebhooks, in
	// intake_ws_test.go) store nothing, and are then sent whole.
	truncated := cutWebhooks(c, strings.TrimPrefix(srv.URL, "http://"), 20, body, sig)
	checkWhole(c, store, body)
	c.inFlight(cutIDs)
	// The processor starts once every delivery is stored, so that each
	// resend finds its task still held, as the intake promises.
	c.waitUp(c.startChild(nil))
	c.waitAll()
	c.waitQuiet()
	c.finish()
	if c.b.name != "amqp" && dups < resent {
		c.t.Errorf("%d of %d resends of deliveries the store held were not recognised as duplicates", resent-dups, resent)
	}
	c.note("%d answers cut mid-reply; %d resends, %d answered as duplicates; %d requests cut mid-body stored nothing",
		cut, resent, dups, len(truncated))
}

// githubPush returns a GitHub push delivery of body, signed with sig, with
// the delivery ID id, to the webhook route /hooks/github at addr.
func githubPush(t *testing.T, addr string, body []byte, sig, id string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/hooks/github", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", sig)
	return req
}
