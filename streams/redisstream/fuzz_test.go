package redisstream

import "testing"

// FuzzEntry feeds the entry decoder what any producer could XADD: field
// names and values of any bytes, and any entry ID. It must never panic,
// and a task always comes out, with the entry ID as its ID when the id
// field is missing or empty.
func FuzzEntry(f *testing.F) {
	f.Add("1700000000000-0", "type", "email", "headers", `{"a":"b"}`, "attempts", "2")
	f.Add("0-0", "id", "", "payload", "\x00\xff", "max_attempts", "-3")
	f.Add("x", "enqueued_at", "99999999999999999999", "priority", " 7 ", "run_at", "-1")
	f.Add("18446744073709551615-18446744073709551615", "headers", `{"n":1,"o":{"x":[1]}}`, "unique_key", "k", "dead_at", "1")
	f.Fuzz(func(t *testing.T, eid, k1, v1, k2, v2, k3, v3 string) {
		e := entryFromList([]any{k1, v1, k2, v2, k3, v3})
		tk := e.task(eid)
		if tk == nil {
			t.Fatal("no task")
		}
		if e.id == "" && tk.ID != eid {
			t.Fatalf("task ID %q, want the entry ID %q", tk.ID, eid)
		}
		if tk.MaxAttempts < 0 || e.counted() < 0 {
			t.Fatalf("negative counts: %+v", tk)
		}
		entryLess(eid, k1)
	})
}
