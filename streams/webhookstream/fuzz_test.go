package webhookstream

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The signature headers come from anyone on the internet. Each parser must
// never panic, keep only well-formed 32-byte MACs, and read back what it
// would write. The seed corpus is in testdata/fuzz.

func FuzzGitHubSignature(f *testing.F) {
	f.Add("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	f.Add("sha1=" + strings.Repeat("0", 40))
	f.Add("sha256=")
	f.Fuzz(func(t *testing.T, v string) {
		sig, err := parseGitHubSignature(v)
		if err != nil {
			if sig != nil {
				t.Fatalf("error %v with a signature", err)
			}
		} else {
			if len(sig) != sha256Size {
				t.Fatalf("%q gave a %d-byte signature", v, len(sig))
			}
			if !strings.EqualFold("sha256="+hex.EncodeToString(sig), v) {
				t.Fatalf("%q parsed as %x", v, sig)
			}
		}
		h := http.Header{"X-Hub-Signature-256": {v}}
		want := signGitHub(githubSecret, []byte("Hello, World!"))
		if _, err := (GitHub{Secrets: secrets(githubSecret)}).Verify(h, []byte("Hello, World!"), time.Now()); err == nil &&
			!strings.EqualFold(v, want) {
			t.Fatalf("%q verified", v)
		}
	})
}

func FuzzStripeHeader(f *testing.F) {
	f.Add("t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39")
	f.Add("t=1,v1=" + strings.Repeat("ab", 32) + ",v1=" + strings.Repeat("cd", 32))
	f.Add("t=,v1=")
	f.Add("t=1,t=2,v1=" + strings.Repeat("00", 32))
	f.Fuzz(func(t *testing.T, v string) {
		ts, sigs, err := parseStripeHeader(v)
		if err != nil {
			return
		}
		if ts < 0 || len(sigs) == 0 {
			t.Fatalf("%q parsed as t=%d with %d signatures", v, ts, len(sigs))
		}
		out := "t=" + strconv.FormatInt(ts, 10)
		for _, s := range sigs {
			if len(s) != sha256Size {
				t.Fatalf("%q gave a %d-byte signature", v, len(s))
			}
			out += ",v1=" + hex.EncodeToString(s)
		}
		ts2, sigs2, err := parseStripeHeader(out)
		if err != nil || ts2 != ts || len(sigs2) != len(sigs) {
			t.Fatalf("%q → %q → %d %d %v", v, out, ts2, len(sigs2), err)
		}
		for i := range sigs {
			if !bytes.Equal(sigs[i], sigs2[i]) {
				t.Fatalf("signature %d changed: %x → %x", i, sigs[i], sigs2[i])
			}
		}
		h := http.Header{"Stripe-Signature": {v}}
		if _, err := (Stripe{Secrets: secrets(stripeSecret)}).Verify(h, []byte("{}"), time.Unix(ts, 0)); err == nil {
			for _, s := range sigs {
				if hex.EncodeToString(s) == stripeV1(stripeSecret, ts, []byte("{}")) {
					return
				}
			}
			t.Fatalf("%q verified without the right signature", v)
		}
	})
}

func FuzzStandardSignatures(f *testing.F) {
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzS6l3S8JD1mVM2eFM5e+fBL+a5uO0ZTcZDs/FCAg==")
	f.Add("  v1,x v2,y\tv1,")
	f.Fuzz(func(t *testing.T, v string) {
		sigs, err := parseStandardSignatures(v)
		if err != nil {
			return
		}
		var parts []string
		for _, s := range sigs {
			if len(s) != sha256Size {
				t.Fatalf("%q gave a %d-byte signature", v, len(s))
			}
			parts = append(parts, "v1,"+base64.StdEncoding.EncodeToString(s))
		}
		out := strings.Join(parts, " ")
		sigs2, err := parseStandardSignatures(out)
		if err != nil || len(sigs2) != len(sigs) {
			t.Fatalf("%q → %q → %d %v", v, out, len(sigs2), err)
		}
		for i := range sigs {
			if !bytes.Equal(sigs[i], sigs2[i]) {
				t.Fatalf("signature %d changed: %x → %x", i, sigs[i], sigs2[i])
			}
		}
		h := http.Header{}
		h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
		h.Set("webhook-timestamp", "1614265330")
		h.Set("webhook-signature", v)
		_, err = (StandardWebhooks{Secrets: secrets(standardSecret)}).Verify(h, []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0))
		if err == nil && !strings.Contains(" "+strings.Join(strings.Fields(v), " ")+" ", " v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= ") {
			t.Fatalf("%q verified without the right signature", v)
		}
	})
}

func FuzzHMACHeader(f *testing.F) {
	f.Add("sha256="+base64.StdEncoding.EncodeToString(make([]byte, 32)), true)
	f.Add("sha256="+strings.Repeat("0", 64), false)
	f.Fuzz(func(t *testing.T, v string, b64 bool) {
		m := HMAC{Header: "X-Signature", Prefix: "sha256=", Secrets: secrets(hmacSecret)}
		if b64 {
			m.Encoding = Base64
		}
		sig, err := m.parse(v)
		if err != nil {
			return
		}
		if len(sig) != sha256Size {
			t.Fatalf("%q gave a %d-byte signature", v, len(sig))
		}
		want := "sha256=" + hex.EncodeToString(sig)
		if b64 {
			want = "sha256=" + base64.StdEncoding.EncodeToString(sig)
		}
		if !strings.EqualFold(want, v) && want != v {
			t.Fatalf("%q parsed as %x", v, sig)
		}
	})
}

func FuzzSlackSignature(f *testing.F) {
	f.Add("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", "1531420618")
	f.Add("v0=", "")
	f.Add("v1="+strings.Repeat("0", 64), "0001531420618")
	f.Fuzz(func(t *testing.T, v, ts string) {
		sig, err := parseSlackSignature(v)
		if err == nil && (len(sig) != sha256Size || !strings.EqualFold("v0="+hex.EncodeToString(sig), v)) {
			t.Fatalf("%q parsed as %x", v, sig)
		}
		h := http.Header{}
		h.Set("X-Slack-Signature", v)
		h.Set("X-Slack-Request-Timestamp", ts)
		unix, _ := parseUnix(ts)
		body := []byte(slackCommand)
		got, err := (Slack{Secrets: secrets(slackSecret)}).Verify(h, body, time.Unix(unix, 0))
		if err != nil {
			return
		}
		m := hmac.New(sha256.New, []byte(slackSecret))
		m.Write([]byte("v0:" + ts + ":" + slackCommand))
		if !strings.EqualFold(v, "v0="+hex.EncodeToString(m.Sum(nil))) {
			t.Fatalf("%q at %q verified", v, ts)
		}
		if !strings.HasPrefix(got.ID, ts+"-") || got.Event != "/deploy" {
			t.Fatalf("verified as %+v", got)
		}
	})
}

// Whatever a signed Slack body holds, the ID and event type it gives are
// usable as a task ID and header.
func FuzzSlackBody(f *testing.F) {
	f.Add([]byte(slackCommand))
	f.Add(slackEvent("Ev0PV52K21"))
	f.Add([]byte(`payload=%7B%22type%22%3A%22shortcut%22%7D`))
	f.Fuzz(func(t *testing.T, body []byte) {
		id, event := slackDelivery(body)
		if id != "" && !slackToken(id) {
			t.Fatalf("ID %q", id)
		}
		if plainText(event) != event {
			t.Fatalf("event %q", event)
		}
	})
}
