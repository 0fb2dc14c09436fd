package intake

import (
	"maps"
	"strings"
	"testing"

	"github.com/peonify/peonify"
)

func TestKey(t *testing.T) {
	long := strings.Repeat("k", peonify.MaxKeyLen+1)
	for _, tc := range []struct {
		field   string
		headers map[string]string
		want    string
		err     string // part of the error, if one is wanted
		left    map[string]string
	}{
		{field: "acme", want: "acme"},
		{field: "acme", headers: map[string]string{"traceparent": "x"}, want: "acme", left: map[string]string{"traceparent": "x"}},
		{headers: map[string]string{"peonify-key": "acme", "a": "b"}, want: "acme", left: map[string]string{"a": "b"}},
		{headers: map[string]string{"Peonify-Key": "acme"}, want: "acme", left: map[string]string{}},
		{field: "acme", headers: map[string]string{"peonify-key": "acme"}, want: "acme", left: map[string]string{}},
		{field: "acme", headers: map[string]string{"peonify-key": "globex"}, err: "given twice"},
		{field: long, err: "longer than 255"},
		{headers: map[string]string{"peonify-key": long}, err: "longer than 255"},
		{field: "\xff", err: "UTF-8"},
		{want: ""},
	} {
		got, err := Key(tc.field, tc.headers)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Key(%.10q, %v) = %q, %v; want an error about %q", tc.field, tc.headers, got, err, tc.err)
			}
		case err != nil || got != tc.want:
			t.Errorf("Key(%q, %v) = %q, %v; want %q", tc.field, tc.headers, got, err, tc.want)
		case tc.headers != nil && !maps.Equal(tc.headers, tc.left):
			t.Errorf("Key(%q, …) left headers %v, want %v", tc.field, tc.headers, tc.left)
		}
	}
}
