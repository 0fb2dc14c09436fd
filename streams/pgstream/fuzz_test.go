package pgstream

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeHeaders feeds the headers decoder what any producer could
// store in the jsonb column: it must never panic, and a JSON object of
// strings must come back as it was.
func FuzzDecodeHeaders(f *testing.F) {
	for _, seed := range []string{`{"a":"b"}`, `{"n":1,"o":{"x":[1,2]}}`, `[]`, `null`, `"s"`, `{`, ``, `{"a":null}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h := decodeHeaders(b)
		var want map[string]string
		if json.Unmarshal(b, &want) == nil && len(want) > 0 {
			for k, v := range want {
				if h[k] != v {
					t.Fatalf("header %q = %q, want %q", k, h[k], v)
				}
			}
		}
	})
}
