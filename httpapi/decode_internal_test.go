package httpapi

import "testing"

// A syntax error is reported with the path of the value it is in.
func TestSyntaxErrorField(t *testing.T) {
	for _, tc := range []struct{ body, field string }{
		{`{"type": tru}`, "type"},
		{`{"type": "t", "payload": {"a": }}`, "payload.a"},
		{`{"type": "t", "payload": [1, 2, }`, "payload[2]"},
		{`{"tasks": [{"type": "a"}, {"type": "b", "priority": nul}]}`, "tasks[1].priority"},
		{`{"tasks": [{"type": "a"}, {"type": "b", "headers": {"x": 'y'}}]}`, "tasks[1].headers.x"},
		{`{"tasks": [{"type": "a"}, {"type": "b", "priority": 1.5.}]}`, "tasks[1]"}, // 1.5 is read, then the '.'
		{`{"tasks": [{"type": "a"} {}]}`, "tasks[1]"},                               // a comma is missing before it
		{`{"tasks": [{"type": "a"}, {"ty`, "tasks[1]"},                              // in a key of it
		{`{"type": "t", "delay": "1s"`, ""},                                         // the closing brace is missing
		{`{"type": "t" "delay": "1s"}`, ""},                                         // a comma is missing between two fields
		{`[1, 2,`, ""},                                                              // not an object
		{``, ""},
	} {
		if got := syntaxErrorField([]byte(tc.body)); got != tc.field {
			t.Errorf("syntaxErrorField(%s) = %q, want %q", tc.body, got, tc.field)
		}
	}
}
