package webhookstream

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Slack's retry of an Events API callback is signed again at a later time
// but keeps its event_id: it is a duplicate of the stored task.
func TestSlackRetryIsDuplicate(t *testing.T) {
	now := time.Now()
	st := newStore(t)
	h := newHandler(t, st, Config{})
	first := serve(t, h, slackRequest(now.Add(-time.Minute), slackEvent("Ev0PV52K21"))).want(t, http.StatusAccepted)
	retry := slackRequest(now, slackEvent("Ev0PV52K21"))
	retry.header["X-Slack-Retry-Num"] = "1"
	retry.header["X-Slack-Retry-Reason"] = "http_timeout"
	a := serve(t, h, retry).want(t, http.StatusOK)
	if a.body["status"] != "duplicate" || a.body["task_id"] != first.body["task_id"] || a.body["task_id"] != "slack:Ev0PV52K21" {
		t.Fatalf("retry answered %v, want a duplicate of %v", a.body, first.body)
	}
	if n := st.stored(t); n != 1 {
		t.Fatalf("%d tasks stored, want 1", n)
	}
}

// Requests without an event_id get an ID from their timestamp and
// signature: the same command sent again, or another command in the same
// second, is a new task; only an identical request is a duplicate.
func TestSlackSignatureID(t *testing.T) {
	now := time.Now()
	st := newStore(t)
	h := newHandler(t, st, Config{})
	r1 := slackRequest(now, []byte(slackCommand))
	id1 := serve(t, h, r1).want(t, http.StatusAccepted).body["task_id"]
	if id1 != "slack:"+slackSignatureID(r1) {
		t.Fatalf("task ID %q, want slack:%s", id1, slackSignatureID(r1))
	}
	if strings.Contains(id1, strings.TrimPrefix(r1.header["X-Slack-Signature"], "v0=")[:32]) {
		t.Fatalf("task ID %q shows the signature", id1)
	}
	again := slackRequest(now.Add(time.Second), []byte(slackCommand)) // the user runs it again
	other := slackRequest(now, []byte(strings.Replace(slackCommand, "text=prod", "text=staging", 1)))
	for _, r := range []request{again, other} {
		if id := serve(t, h, r).want(t, http.StatusAccepted).body["task_id"]; id == id1 {
			t.Fatalf("a different request got the same ID %q", id)
		}
	}
	serve(t, h, r1).want(t, http.StatusOK) // an identical replay
	if n := st.stored(t); n != 3 {
		t.Fatalf("%d tasks stored, want 3", n)
	}
}

// The event type comes from each kind of Slack request, and what is not
// fit for a task ID or header is left out rather than refused.
func TestSlackDelivery(t *testing.T) {
	interaction := "payload=" + url.QueryEscape(`{"type":"block_actions","trigger_id":"12466734323.1395872398"}`)
	for _, tc := range []struct {
		name, body, id, event string
	}{
		{"event callback", string(slackEvent("Ev1")), "Ev1", "app_mention"},
		{"url verification", `{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`, "", "url_verification"},
		{"rate limited", `{"token":"x","type":"app_rate_limited","team_id":"T123456","minute_rate_limited":1518467820,"api_app_id":"A123456"}`, "", "app_rate_limited"},
		{"slash command", slackCommand, "", "/deploy"},
		{"interaction", interaction, "", "block_actions"},
		{"event_id not a token", `{"type":"event_callback","event_id":"Ev 1\n","event":{"type":"message"}}`, "", "message"},
		{"event_id too long", `{"type":"event_callback","event_id":"` + strings.Repeat("E", 65) + `"}`, "", "event_callback"},
		{"event not an object", `{"type":"event_callback","event_id":"Ev2","event":"x"}`, "Ev2", "event_callback"},
		{"type with control chars", `{"type":"a\u0001b"}`, "", ""},
		{"command not utf-8", "command=%2Fa%ff", "", ""},
		{"neither", "\x00\xff", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, event := slackDelivery([]byte(tc.body))
			if id != tc.id || event != tc.event {
				t.Fatalf("id %q, event %q; want %q, %q", id, event, tc.id, tc.event)
			}
			// Through the handler, every one of them is accepted.
			st := newStore(t)
			h := newHandler(t, st, Config{})
			a := serve(t, h, slackRequest(time.Now(), []byte(tc.body))).want(t, http.StatusAccepted)
			if tc.id != "" && a.body["task_id"] != "slack:"+tc.id {
				t.Fatalf("task ID %q, want slack:%s", a.body["task_id"], tc.id)
			}
			if got := st.get(t, a.body["task_id"]).Headers[HeaderEvent]; got != tc.event {
				t.Fatalf("event header %q, want %q", got, tc.event)
			}
		})
	}
}

// Slack's tolerance is configurable like Stripe's, and New refuses a
// Slack or Shopify verifier without secrets or with a negative tolerance.
func TestSlackTolerance(t *testing.T) {
	body := []byte(slackCommand)
	signed := time.Unix(1531420618, 0)
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", strconv.FormatInt(signed.Unix(), 10))
	h.Set("X-Slack-Signature", signSlack(slackSecret, signed.Unix(), body))
	v := Slack{Secrets: secrets(slackSecret), Tolerance: time.Minute}
	if _, err := v.Verify(h, body, signed.Add(59*time.Second)); err != nil {
		t.Fatalf("within the tolerance: %v", err)
	}
	if _, err := v.Verify(h, body, signed.Add(61*time.Second)); err == nil || !strings.Contains(err.Error(), "1m0s allowed") {
		t.Fatalf("past the tolerance: %v", err)
	}
	h.Add("X-Slack-Request-Timestamp", "1")
	if _, err := v.Verify(h, body, signed); err == nil {
		t.Fatal("two timestamps were accepted")
	}
	for _, bad := range []Verifier{
		Slack{}, Slack{Secrets: secrets("")}, Slack{Secrets: secrets("s"), Tolerance: -1},
		Shopify{}, Shopify{Secrets: secrets("a", "")},
	} {
		if _, err := New(newStore(t), Config{Routes: map[string]Route{"/x": {Type: "x", Verifier: bad}}}); err == nil {
			t.Errorf("New accepted %#v", bad)
		}
	}
}
