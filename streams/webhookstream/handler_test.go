package webhookstream

import (
	"bytes"

	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

// Each preset accepts a correctly signed delivery: 202 with the task ID,
// and the task stored with the raw body, the delivery ID and the headers.
func TestAccepts(t *testing.T) {
	now := time.Now()
	ghBody := []byte("{\"ref\":\"refs/heads/main\",  \"x\": \"\u00e9\"}\n")
	slackCmd := slackRequest(now, []byte(slackCommand))
	for _, tc := range []struct {
		name      string
		req       request
		wantID    string
		wantEvent string
	}{
		{"github", githubRequest("72d3162e-cc78-11e3-81ab-4c9367dc0958", ghBody), "github:72d3162e-cc78-11e3-81ab-4c9367dc0958", "push"},
		{"stripe", stripeRequest("evt_1NG8Du2eZvKYlo2CUI79vXWy", now), "stripe:evt_1NG8Du2eZvKYlo2CUI79vXWy", "invoice.paid"},
		{"standard", standardRequest("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now, []byte(`{"type":"user.created","data":{}}`)),
			"standard:msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "user.created"},
		{"hmac", hmacRequest("d-1", []byte("not json \x00\xff")), "hmac:d-1", "thing.created"},
		{"slack", slackRequest(now, slackEvent("Ev0PV52K21")), "slack:Ev0PV52K21", "app_mention"},
		{"slack", slackCmd, "slack:" + slackSignatureID(slackCmd), "/deploy"},
		{"shopify", shopifyRequest("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", []byte(`{"id":820982911946154508}`)),
			"shopify:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "orders/create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			h := newHandler(t, st, Config{})
			a := serve(t, h, tc.req).want(t, http.StatusAccepted)
			if a.body["task_id"] != tc.wantID || a.body["status"] != "accepted" || a.header.Get(ResponseTaskID) != tc.wantID {
				t.Fatalf("answer %v %v, want task_id %q accepted", a.body, a.header, tc.wantID)
			}
			task := st.get(t, tc.wantID)
			if !bytes.Equal(task.Payload, tc.req.body) {
				t.Fatalf("payload %q, want the raw body %q", task.Payload, tc.req.body)
			}
			if task.Type != tc.name {
				t.Fatalf("type %q, want %q", task.Type, tc.name)
			}
			want := map[string]string{HeaderEvent: tc.wantEvent, HeaderDeliveryID: strings.TrimPrefix(tc.wantID, tc.name+":")}
			if ct := tc.req.header["Content-Type"]; ct != "" {
				want[HeaderContentType] = ct
			}
			if !equalMaps(task.Headers, want) {
				t.Fatalf("headers %v, want %v", task.Headers, want)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Every forged, stale or malformed request is refused with the right
// status and nothing is enqueued.
func TestRefuses(t *testing.T) {
	now := time.Now()
	body := []byte(`{"ok":true}`)
	tamper := func(r request, f func(r *request)) request {
		c := request{method: r.method, path: r.path, body: append([]byte(nil), r.body...), header: map[string]string{}}
		for k, v := range r.header {
			c.header[k] = v
		}
		f(&c)
		return c
	}
	gh := githubRequest("d1", body)
	sr := stripeRequest("evt_1", now)
	sw := standardRequest("msg_1", now, body)
	hm := hmacRequest("h1", body)
	sl := slackRequest(now, []byte(slackCommand))
	sh := shopifyRequest("s1", body)
	for _, tc := range []struct {
		name   string
		req    request
		status int
		msg    string // part of the error the sender sees
	}{
		{"github wrong secret", tamper(gh, func(r *request) { r.header["X-Hub-Signature-256"] = signGitHub("other", body) }), 401, "does not match"},
		{"github missing signature", tamper(gh, func(r *request) { delete(r.header, "X-Hub-Signature-256") }), 401, "no X-Hub-Signature-256"},
		{"github tampered body", tamper(gh, func(r *request) { r.body = []byte(`{"ok":false}`) }), 401, "does not match"},
		{"github sha1 only", tamper(gh, func(r *request) { r.header["X-Hub-Signature-256"] = "sha1=" + strings.Repeat("a", 40) }), 401, "sha256="},
		{"github not hex", tamper(gh, func(r *request) { r.header["X-Hub-Signature-256"] = "sha256=" + strings.Repeat("z", 64) }), 401, "not hexadecimal"},

		{"stripe wrong secret", tamper(sr, func(r *request) { r.header["Stripe-Signature"] = signStripe("whsec_other", now.Unix(), r.body) }), 401, "does not match"},
		{"stripe missing signature", tamper(sr, func(r *request) { delete(r.header, "Stripe-Signature") }), 401, "no Stripe-Signature"},
		{"stripe no v1", tamper(sr, func(r *request) { r.header["Stripe-Signature"] = "t=" + strconv.FormatInt(now.Unix(), 10) }), 401, "no v1="},
		{"stripe no t", tamper(sr, func(r *request) { r.header["Stripe-Signature"] = "v1=" + stripeV1(stripeSecret, now.Unix(), r.body) }), 401, "no t="},
		{"stripe signed t changed", tamper(sr, func(r *request) {
			r.header["Stripe-Signature"] = "t=" + strconv.FormatInt(now.Unix()+1, 10) + ",v1=" + stripeV1(stripeSecret, now.Unix(), r.body)
		}), 401, "does not match"},
		{"stripe stale", tamper(sr, func(r *request) {
			r.header["Stripe-Signature"] = signStripe(stripeSecret, now.Add(-6*time.Minute).Unix(), r.body)
		}), 401, "ago"},
		{"stripe future", tamper(sr, func(r *request) {
			r.header["Stripe-Signature"] = signStripe(stripeSecret, now.Add(6*time.Minute).Unix(), r.body)
		}), 401, "in the future"},

		{"standard wrong secret", tamper(sw, func(r *request) {
			r.header["webhook-signature"] = signStandard("whsec_"+strings.Repeat("A", 43)+"=", "msg_1", now.Unix(), body)
		}), 401, "does not match"},
		{"standard missing signature", tamper(sw, func(r *request) { delete(r.header, "webhook-signature") }), 401, "no webhook-signature"},
		{"standard missing id", tamper(sw, func(r *request) { delete(r.header, "webhook-id") }), 401, "webhook-id"},
		{"standard id changed", tamper(sw, func(r *request) { r.header["webhook-id"] = "msg_2" }), 401, "does not match"},
		{"standard timestamp changed", tamper(sw, func(r *request) { r.header["webhook-timestamp"] = strconv.FormatInt(now.Unix()-1, 10) }), 401, "does not match"},
		{"standard bad timestamp", tamper(sw, func(r *request) { r.header["webhook-timestamp"] = "-5" }), 401, "Unix time"},
		{"standard stale", standardRequest("msg_1", now.Add(-10*time.Minute), body), 401, "ago"},
		{"standard future", standardRequest("msg_1", now.Add(10*time.Minute), body), 401, "in the future"},
		{"standard v1a only", tamper(sw, func(r *request) { r.header["webhook-signature"] = "v1a," + strings.Repeat("A", 86) + "==" }), 401, "no v1"},

		{"hmac wrong secret", tamper(hm, func(r *request) { r.header["X-Signature"] = "sha256=" + strings.Repeat("A", 43) + "=" }), 401, "does not match"},
		{"hmac no prefix", tamper(hm, func(r *request) { r.header["X-Signature"] = strings.TrimPrefix(r.header["X-Signature"], "sha256=") }), 401, "must start with"},
		{"hmac missing", tamper(hm, func(r *request) { delete(r.header, "X-Signature") }), 401, "no X-Signature"},

		{"slack wrong secret", tamper(sl, func(r *request) { r.header["X-Slack-Signature"] = signSlack("other", now.Unix(), r.body) }), 401, "does not match"},
		{"slack missing signature", tamper(sl, func(r *request) { delete(r.header, "X-Slack-Signature") }), 401, "no X-Slack-Signature"},
		{"slack missing timestamp", tamper(sl, func(r *request) { delete(r.header, "X-Slack-Request-Timestamp") }), 401, "X-Slack-Request-Timestamp"},
		{"slack tampered body", tamper(sl, func(r *request) { r.body = append(r.body, 'x') }), 401, "does not match"},
		{"slack timestamp changed", tamper(sl, func(r *request) { r.header["X-Slack-Request-Timestamp"] = strconv.FormatInt(now.Unix()-1, 10) }), 401, "does not match"},
		{"slack bad timestamp", tamper(sl, func(r *request) { r.header["X-Slack-Request-Timestamp"] = "-5" }), 401, "Unix time"},
		{"slack not v0", tamper(sl, func(r *request) { r.header["X-Slack-Signature"] = "v1=" + strings.Repeat("a", 64) }), 401, "v0="},
		{"slack not hex", tamper(sl, func(r *request) { r.header["X-Slack-Signature"] = "v0=" + strings.Repeat("z", 64) }), 401, "not hexadecimal"},
		{"slack short", tamper(sl, func(r *request) { r.header["X-Slack-Signature"] = "v0=abcd" }), 401, "64 hex digits"},
		{"slack stale", slackRequest(now.Add(-6*time.Minute), []byte(slackCommand)), 401, "ago"},
		{"slack future", slackRequest(now.Add(6*time.Minute), []byte(slackCommand)), 401, "in the future"},

		{"shopify wrong secret", tamper(sh, func(r *request) { r.header["X-Shopify-Hmac-Sha256"] = signShopify("other", body) }), 401, "does not match"},
		{"shopify missing", tamper(sh, func(r *request) { delete(r.header, "X-Shopify-Hmac-Sha256") }), 401, "no X-Shopify-Hmac-Sha256"},
		{"shopify tampered body", tamper(sh, func(r *request) { r.body = []byte(`{"ok":false}`) }), 401, "does not match"},
		{"shopify hex", tamper(sh, func(r *request) { r.header["X-Shopify-Hmac-Sha256"] = strings.Repeat("ab", 32) }), 401, "not a base64"},

		{"malformed json", func() request {
			b := []byte(`{"ok":tru`)
			return githubRequest("d2", b)
		}(), 400, "not valid JSON"},
		{"wrong method", tamper(gh, func(r *request) { r.method = http.MethodGet }), 405, "POST"},
		{"put", tamper(gh, func(r *request) { r.method = http.MethodPut }), 405, "POST"},
		{"unknown path", tamper(gh, func(r *request) { r.path = "/githubx" }), 404, "no webhook route"},
		{"delivery id too long", githubRequest(strings.Repeat("x", 250), body), 400, "longer than"},
		{"delivery id control chars", githubRequest("a\x01b", body), 400, "control characters"},
		{"header not utf-8", tamper(gh, func(r *request) { r.header["Content-Type"] = "text/\xff" }), 400, "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			h := newHandler(t, st, Config{})
			a := serve(t, h, tc.req).want(t, tc.status)
			if !strings.Contains(a.body["error"], tc.msg) {
				t.Fatalf("error %q does not say %q", a.body["error"], tc.msg)
			}
			if tc.status == http.StatusMethodNotAllowed && a.header.Get("Allow") != "POST" {
				t.Fatalf("Allow: %q, want POST", a.header.Get("Allow"))
			}
			if n := st.stored(t); n != 0 || st.Calls() != 0 {
				t.Fatalf("%d tasks stored after %d Enqueue calls; want none", n, st.Calls())
			}
		})
	}
}

// A redelivery of a stored event is answered 200 with the duplicate header
// and not stored again; a replay of the same delivery ID with a bad
// signature is 401.
func TestReplay(t *testing.T) {
	now := time.Now()
	body := []byte(`{"n":1}`)
	for _, tc := range []struct {
		name   string
		good   request
		forged func(r request) request
	}{
		{"github", githubRequest("d-1", body), func(r request) request {
			r.header["X-Hub-Signature-256"] = signGitHub("guess", r.body)
			return r
		}},
		{"stripe", stripeRequest("evt_9", now), func(r request) request {
			r.header["Stripe-Signature"] = signStripe("whsec_guess", now.Unix(), r.body)
			return r
		}},
		{"standard", standardRequest("msg_9", now, body), func(r request) request {
			r.header["webhook-signature"] = "v1," + strings.Repeat("B", 43) + "="
			return r
		}},
		{"hmac", hmacRequest("h-9", body), func(r request) request {
			r.body = []byte(`{"n":2}`) // same signature, other body
			return r
		}},
		{"slack", slackRequest(now, slackEvent("Ev9")), func(r request) request {
			r.header["X-Slack-Signature"] = signSlack("guess", now.Unix(), r.body)
			return r
		}},
		{"slack command", slackRequest(now, []byte(slackCommand)), func(r request) request {
			r.header["X-Slack-Request-Timestamp"] = strconv.FormatInt(now.Unix()+1, 10) // same signature, other time
			return r
		}},
		{"shopify", shopifyRequest("s-9", body), func(r request) request {
			r.header["X-Shopify-Hmac-Sha256"] = signShopify("guess", r.body)
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			h := newHandler(t, st, Config{})
			id := serve(t, h, tc.good).want(t, http.StatusAccepted).body["task_id"]

			a := serve(t, h, tc.good).want(t, http.StatusOK)
			if a.body["status"] != "duplicate" || a.body["task_id"] != id || a.header.Get(ResponseDuplicate) != "true" {
				t.Fatalf("replay answered %v %v, want duplicate of %s", a.body, a.header, id)
			}
			forged := tc.forged(request{path: tc.good.path, body: tc.good.body, header: clone(tc.good.header)})
			serve(t, h, forged).want(t, http.StatusUnauthorized)
			if n := st.stored(t); n != 1 {
				t.Fatalf("%d tasks stored, want 1", n)
			}
			if c := st.Calls(); c != 2 {
				t.Fatalf("%d Enqueue calls, want 2 (the forged replay must not reach the store)", c)
			}
		})
	}
}

func clone(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Every preset accepts a request signed with any of its secrets, so that a
// secret can be rotated; Stripe and Standard Webhooks senders sign with
// both during a rotation.
func TestRotation(t *testing.T) {
	now := time.Now()
	body := []byte(`{}`)
	const newStd = "whsec_" + "bmV3LXN0YW5kYXJkLWtleS0xMjM0NTY3ODkwYWJjZA=="
	routes := map[string]Route{
		"/github":   {Type: "github", Verifier: GitHub{Secrets: secrets("old", githubSecret)}},
		"/stripe":   {Type: "stripe", Verifier: Stripe{Secrets: secrets("whsec_old", stripeSecret)}},
		"/standard": {Type: "standard", Verifier: StandardWebhooks{Secrets: secrets(newStd, standardSecret)}},
		"/slack":    {Type: "slack", Verifier: Slack{Secrets: secrets("old", slackSecret)}},
		"/shopify":  {Type: "shopify", Verifier: Shopify{Secrets: secrets(shopifySecret, "new")}},
	}
	st := newStore(t)
	h := newHandler(t, st, Config{Routes: routes})
	serve(t, h, githubRequest("a", body)).want(t, http.StatusAccepted)
	r := githubRequest("b", body)
	r.header["X-Hub-Signature-256"] = signGitHub("old", body)
	serve(t, h, r).want(t, http.StatusAccepted)

	// Stripe signs with the expiring and the new secret while it rolls.
	r = stripeRequest("evt_r", now)
	r.header["Stripe-Signature"] = "t=" + strconv.FormatInt(now.Unix(), 10) +
		",v1=" + stripeV1("whsec_unknown", now.Unix(), r.body) + ",v1=" + stripeV1(stripeSecret, now.Unix(), r.body) +
		",v0=" + strings.Repeat("0", 64)
	serve(t, h, r).want(t, http.StatusAccepted)

	r = standardRequest("msg_r", now, body)
	r.header["webhook-signature"] = signStandard(newStd, "msg_r", now.Unix(), body) + " v1a,AAAA " + r.header["webhook-signature"]
	serve(t, h, r).want(t, http.StatusAccepted)
	r = standardRequest("msg_s", now, body)
	r.header["webhook-signature"] = signStandard(newStd, "msg_s", now.Unix(), body)
	serve(t, h, r).want(t, http.StatusAccepted)

	serve(t, h, slackRequest(now, slackEvent("EvA"))).want(t, http.StatusAccepted)
	r = slackRequest(now, slackEvent("EvB"))
	r.header["X-Slack-Signature"] = signSlack("old", now.Unix(), r.body)
	serve(t, h, r).want(t, http.StatusAccepted)
	serve(t, h, shopifyRequest("sa", body)).want(t, http.StatusAccepted)
	r = shopifyRequest("sb", body)
	r.header["X-Shopify-Hmac-Sha256"] = signShopify("new", body)
	serve(t, h, r).want(t, http.StatusAccepted)

	if n := st.stored(t); n != 9 {
		t.Fatalf("%d tasks stored, want 9", n)
	}
}

// The presets match the examples their providers publish.
func TestKnownAnswers(t *testing.T) {
	// GitHub's documentation: secret "It's a Secret to Everybody", payload
	// "Hello, World!".
	h := http.Header{}
	h.Set("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	h.Set("X-GitHub-Delivery", "d")
	if _, err := (GitHub{Secrets: secrets(githubSecret)}).Verify(h, []byte("Hello, World!"), time.Now()); err != nil {
		t.Errorf("GitHub's documented example: %v", err)
	}

	// The Standard Webhooks specification's example.
	h = http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	v := StandardWebhooks{Secrets: secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")}
	got, err := v.Verify(h, []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0).Add(4*time.Minute))
	if err != nil || got.ID != "msg_p5jXN8AQM9LWM0D4loKWxJek" {
		t.Errorf("Standard Webhooks' example: %+v, %v", got, err)
	}
	if _, err := v.Verify(h, []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0).Add(6*time.Minute)); !errors.Is(err, ErrTimestamp) {
		t.Errorf("6 minutes late: %v, want ErrTimestamp", err)
	}
	// The prefix is optional.
	v = StandardWebhooks{Secrets: secrets("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")}
	if _, err := v.Verify(h, []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0)); err != nil {
		t.Errorf("secret without whsec_: %v", err)
	}

	// Slack's "Verifying requests from Slack": a slash command signed with
	// secret 8f742231b10e8888abcd99yyyzzz85a5 at 1531420618.
	h = http.Header{}
	h.Set("X-Slack-Request-Timestamp", "1531420618")
	h.Set("X-Slack-Signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")
	body := []byte("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V" +
		"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=" +
		"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN" +
		"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
	slack := Slack{Secrets: secrets("8f742231b10e8888abcd99yyyzzz85a5")}
	got, err = slack.Verify(h, body, time.Unix(1531420618, 0).Add(4*time.Minute))
	if err != nil || got.Event != "/webhook-collect" || !strings.HasPrefix(got.ID, "1531420618-") {
		t.Errorf("Slack's example: %+v, %v", got, err)
	}
	if _, err := slack.Verify(h, body, time.Unix(1531420618, 0).Add(6*time.Minute)); !errors.Is(err, ErrTimestamp) {
		t.Errorf("6 minutes late: %v, want ErrTimestamp", err)
	}
	if _, err := (Slack{Secrets: secrets("8f742231b10e8888abcd99yyyzzz85a6")}).Verify(h, body, time.Unix(1531420618, 0)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another secret: %v, want ErrBadSignature", err)
	}

	// Shopify publishes no vector: this one was computed with Python's hmac
	// module, base64.b64encode(hmac.new(secret, body, sha256).digest()).
	h = http.Header{}
	h.Set("X-Shopify-Hmac-Sha256", "3dGZCgBHCrTEHtWQSGgJGFBJo3JEsxLmtPhqMVKwLaM=")
	h.Set("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
	h.Set("X-Shopify-Topic", "orders/create")
	got, err = (Shopify{Secrets: secrets("shpss_5c1f3e1b2a9d4e8f")}).Verify(h, []byte(`{"id":820982911946154508,"email":"jon@example.com"}`), time.Now())
	if err != nil || got.ID != "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043" || got.Event != "orders/create" {
		t.Errorf("Shopify vector: %+v, %v", got, err)
	}
}

// A body over the limit is refused with 413, whether its length is declared
// or not, and a body at the limit is accepted.
func TestBodyLimit(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{MaxBodyBytes: 64})
	big := []byte(`{"x":"` + strings.Repeat("a", 100) + `"}`)
	a := serve(t, h, githubRequest("big", big)).want(t, http.StatusRequestEntityTooLarge)
	if !strings.Contains(a.body["error"], "64 bytes") {
		t.Fatalf("error %q does not give the limit", a.body["error"])
	}
	// Chunked, without a Content-Length: the reader stops at the limit.
	r := githubRequest("big2", big)
	req, _ := http.NewRequest(http.MethodPost, "/github", struct{ *strings.Reader }{strings.NewReader(string(big))})
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if req.ContentLength != 0 {
		t.Fatal("the request declares its length")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked oversized body: status %d, want 413", rec.Code)
	}
	if n := st.stored(t); n != 0 || st.Calls() != 0 {
		t.Fatalf("%d tasks stored; want none", n)
	}
	exact := []byte(`{"x":"` + strings.Repeat("a", 64-8) + `"}`)
	serve(t, h, githubRequest("exact", exact)).want(t, http.StatusAccepted)

	// A route may raise the limit.
	routes := testRoutes()
	gh := routes["/github"]
	gh.MaxBodyBytes = 1000
	routes["/github"] = gh
	h = newHandler(t, st, Config{MaxBodyBytes: 64, Routes: routes})
	serve(t, h, githubRequest("big", big)).want(t, http.StatusAccepted)
}

// An unsigned route accepts any POST, with a new task ID each time and the
// headers it names.
func TestUnsignedRoute(t *testing.T) {
	st := newStore(t)
	routes := map[string]Route{"/in": {Type: "in", AllowUnsigned: true, Headers: []string{"x-tenant", "X-Missing"},
		IDPrefix: "ignored:", MaxAttempts: 3, Priority: 7}}
	h := newHandler(t, st, Config{Routes: routes})
	req := request{path: "/in", body: []byte("plain"), header: map[string]string{"X-Tenant": "acme"}}
	a := serve(t, h, req).want(t, http.StatusAccepted)
	b := serve(t, h, req).want(t, http.StatusAccepted)
	if a.body["task_id"] == b.body["task_id"] {
		t.Fatal("two unsigned requests got the same task ID")
	}
	task := st.get(t, a.body["task_id"])
	if !equalMaps(task.Headers, map[string]string{"x-tenant": "acme"}) || task.MaxAttempts != 3 || task.Priority != 7 {
		t.Fatalf("task %+v", task)
	}
}

// The Peonify-Key request header, or the route's KeyHeader, is the task's
// Key, and not a task header; one longer than peonify.MaxKeyLen is
// refused with 400, naming the header, and nothing is stored.
func TestKeyHeader(t *testing.T) {
	st := newStore(t)
	routes := map[string]Route{
		"/in":   {Type: "in", AllowUnsigned: true, Headers: []string{"Peonify-Key", "X-Tenant"}},
		"/shop": {Type: "shop", AllowUnsigned: true, KeyHeader: "x-shop-domain"},
	}
	h := newHandler(t, st, Config{Routes: routes})
	a := serve(t, h, request{path: "/in", body: []byte("a"), header: map[string]string{"Peonify-Key": "tenant-7", "X-Tenant": "acme"}}).
		want(t, http.StatusAccepted)
	if task := st.get(t, a.body["task_id"]); task.Key != "tenant-7" || !equalMaps(task.Headers, map[string]string{"x-tenant": "acme"}) {
		t.Errorf("task stored with Key %q and Headers %v, want tenant-7 and only x-tenant", task.Key, task.Headers)
	}
	b := serve(t, h, request{path: "/shop", body: []byte("b"), header: map[string]string{"X-Shop-Domain": "shop-1.example", "Peonify-Key": "ignored"}}).
		want(t, http.StatusAccepted)
	if task := st.get(t, b.body["task_id"]); task.Key != "shop-1.example" {
		t.Errorf("task stored with Key %q, want the X-Shop-Domain header's shop-1.example", task.Key)
	}
	n := st.stored(t)
	bad := serve(t, h, request{path: "/in", body: []byte("c"), header: map[string]string{"Peonify-Key": strings.Repeat("k", peonify.MaxKeyLen+1)}}).
		want(t, http.StatusBadRequest)
	if !strings.Contains(bad.raw, "Peonify-Key header") || !strings.Contains(bad.raw, "longer than 255") {
		t.Errorf("answer to a long key: %s, want it to name the Peonify-Key header and the limit", bad.raw)
	}
	if st.stored(t) != n {
		t.Error("a task with a key too long was stored")
	}
}

// The same Stripe event sent to two routes of one store is two tasks.
func TestIDPrefix(t *testing.T) {
	now := time.Now()
	st := newStore(t)
	routes := map[string]Route{
		"/a": {Type: "billing", Verifier: Stripe{Secrets: secrets(stripeSecret)}},
		"/b": {Type: "audit", Verifier: Stripe{Secrets: secrets(stripeSecret)}},
		"/c": {Type: "audit", Verifier: Stripe{Secrets: secrets(stripeSecret)}, IDPrefix: "c/"},
	}
	h := newHandler(t, st, Config{Routes: routes})
	for _, path := range []string{"/a", "/b", "/c"} {
		r := stripeRequest("evt_same", now)
		r.path = path
		serve(t, h, r).want(t, http.StatusAccepted)
	}
	for _, id := range []string{"billing:evt_same", "audit:evt_same", "c/evt_same"} {
		st.get(t, id)
	}
}

// New refuses configurations that cannot work, naming the field.
func TestConfigErrors(t *testing.T) {
	st := newStore(t)
	gh := GitHub{Secrets: secrets("s")}
	for _, tc := range []struct {
		name  string
		cfg   Config
		want  string
		field string // the ConfigError's Field, when the test names it
	}{
		{"no routes", Config{}, "Routes", ""},
		{"negative limit", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh}}, MaxBodyBytes: -1}, "MaxBodyBytes", ""},
		{"negative timeout", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh}}, BodyTimeout: -1}, "BodyTimeout", ""},
		{"relative path", Config{Routes: map[string]Route{"a": {Type: "a", Verifier: gh}}}, "start with", ""},
		{"no type", Config{Routes: map[string]Route{"/a": {Verifier: gh}}}, "Type: is empty", ""},
		{"no verifier", Config{Routes: map[string]Route{"/a": {Type: "a"}}}, "Verifier is nil", ""},
		{"both", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh, AllowUnsigned: true}}}, "choose one", ""},
		{"no secret", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: GitHub{}}}}, "Secrets: is empty", `webhookstream.Config.Routes["/a"].Verifier.Secrets`},
		{"empty secret", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: Stripe{Secrets: []Secret{{}}}}}}, "Secrets[0]: is empty", `webhookstream.Config.Routes["/a"].Verifier.Secrets[0]`},
		{"bad standard secret", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: StandardWebhooks{Secrets: secrets("whsec_c2VjcmV0", "whsec_!!")}}}}, "base64", `webhookstream.Config.Routes["/a"].Verifier.Secrets[1]`},
		{"negative tolerance", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: Stripe{Secrets: secrets("s"), Tolerance: -1}}}}, "Tolerance", `webhookstream.Config.Routes["/a"].Verifier.Tolerance`},
		{"hmac no header", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: HMAC{Secrets: secrets("s")}}}}, "Header", `webhookstream.Config.Routes["/a"].Verifier.Header`},
		{"hmac encoding", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: HMAC{Header: "X", Encoding: 7, Secrets: secrets("s")}}}}, "Encoding", `webhookstream.Config.Routes["/a"].Verifier.Encoding`},
		{"sync without results", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh, Sync: true}}}, "Results", ""},
		{"bad header name", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh, Headers: []string{"a b"}}}}, "header name", ""},
		{"bad max attempts", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh, MaxAttempts: -1}}}, "MaxAttempts", ""},
		{"bad key header", Config{Routes: map[string]Route{"/a": {Type: "a", Verifier: gh, KeyHeader: "X Shop"}}}, "KeyHeader", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(st, tc.cfg)
			var ce *peonify.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want a ConfigError saying %q", err, tc.want)
			}
			if tc.field != "" && ce.Field != tc.field {
				t.Fatalf("New: a ConfigError of %s, want %s", ce.Field, tc.field)
			}
		})
	}
	if _, err := New(nil, Config{Routes: testRoutes()}); err == nil {
		t.Fatal("New with a nil store succeeded")
	}
}

// A custom Verifier's error is not shown to the sender.
func TestCustomVerifierError(t *testing.T) {
	st := newStore(t)
	v := verifierFunc(func(http.Header, []byte, time.Time) (Verified, error) {
		return Verified{}, errors.New("lookup in tenants table at 10.0.0.5 failed")
	})
	h := newHandler(t, st, Config{Routes: map[string]Route{"/c": {Type: "c", Verifier: v}}})
	a := serve(t, h, request{path: "/c", body: []byte("x")}).want(t, http.StatusUnauthorized)
	if a.body["error"] != "signature verification failed" {
		t.Fatalf("error %q leaks the verifier's detail", a.body["error"])
	}
}

type verifierFunc func(http.Header, []byte, time.Time) (Verified, error)

func (f verifierFunc) Verify(h http.Header, b []byte, now time.Time) (Verified, error) {
	return f(h, b, now)
}

// The handler's clock decides which timestamps are stale.
func TestClock(t *testing.T) {
	st := newStore(t)
	h := newHandler(t, st, Config{})
	past := time.Now().Add(-time.Hour)
	serve(t, h, stripeRequest("evt_old", past)).want(t, http.StatusUnauthorized)
	h.now = func() time.Time { return past.Add(4 * time.Minute) }
	serve(t, h, stripeRequest("evt_old", past)).want(t, http.StatusAccepted)
}
