package peonify_test

import (
	"context"
	"strings"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

func TestJSONKey(t *testing.T) {
	cases := []struct {
		path, payload, want string
	}{
		{"tenant", `{"tenant":"acme"}`, "acme"},
		{"account.id", `{"account":{"id":12345678901234567890}}`, "12345678901234567890"},
		{"vip", `{"vip":true}`, "true"},
		{"tenant", `{"tenant":null}`, ""},
		{"tenant", `{"tenant":{"a":1}}`, ""},
		{"tenant", `{"other":"x"}`, ""},
		{"tenant.id", `{"tenant":"acme"}`, ""},
		{"tenant", `not json`, ""},
		{"tenant", ``, ""},
	}
	for _, c := range cases {
		if got := peonify.JSONKey(c.path)(&peonify.Task{Payload: []byte(c.payload)}); got != c.want {
			t.Errorf("JSONKey(%q) of %s = %q, want %q", c.path, c.payload, got, c.want)
		}
	}
}

func TestKeyFrom(t *testing.T) {
	ctx := context.Background()
	ms := memstream.New(memstream.Config{})
	defer ms.Close(ctx)
	e := peonify.KeyFrom(ms, peonify.HeaderKey("X-Tenant"))
	tasks := []*peonify.Task{
		{ID: "a", Type: "t", Headers: map[string]string{"X-Tenant": "acme"}},
		{ID: "b", Type: "t", Key: "own", Headers: map[string]string{"X-Tenant": "acme"}}, // the producer's key wins
		{ID: "c", Type: "t"},
	}
	if err := e.Enqueue(ctx, tasks...); err != nil {
		t.Fatal(err)
	}
	ds, err := ms.Poll(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range ds {
		got[d.Task.ID] = d.Task.Key
	}
	if got["a"] != "acme" || got["b"] != "own" || got["c"] != "" || len(got) != 3 {
		t.Errorf("keys stored: %v, want a:acme b:own c:none", got)
	}

	long := peonify.KeyFrom(ms, func(*peonify.Task) string { return strings.Repeat("k", peonify.MaxKeyLen+1) })
	if err := long.Enqueue(ctx, &peonify.Task{Type: "t"}); err == nil || !strings.Contains(err.Error(), "Key is longer") {
		t.Errorf("a derived key that is too long: got %v, want the Enqueue to fail naming the Key", err)
	}
}
