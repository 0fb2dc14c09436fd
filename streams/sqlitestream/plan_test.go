package sqlitestream

import (
	"strings"
	"testing"
)

// TestQueryPlans checks that every statement of the writer reads through an
// index, and never sorts: the cost of a claim or an ack must not grow with
// the number of tasks in other states, nor that of a release with the
// number of dependencies of other tasks.
func TestQueryPlans(t *testing.T) {
	s := openTest(t, Config{}, nil)
	if _, err := s.db.Exec(groupsIndex); err != nil { // as the first limited claim does
		t.Fatal(err)
	}
	want := map[string]string{
		"insert":    "",
		"promote":   "peonify_tasks_scheduled",
		"rescue":    "peonify_tasks_running",
		"claim":     "peonify_tasks_pending",
		"nextDue":   "peonify_tasks_running",
		"ackDelete": "sqlite_autoindex_peonify_tasks_1",
		"ackDone":   "sqlite_autoindex_peonify_tasks_1",
		"retry":     "sqlite_autoindex_peonify_tasks_1",
		"release":   "sqlite_autoindex_peonify_tasks_1",
		"bury":      "sqlite_autoindex_peonify_tasks_1",
		"extend":    "sqlite_autoindex_peonify_tasks_1",
		"cleanDone": "peonify_tasks_done",
		"cleanDead": "peonify_tasks_dead",
		"cleanCanc": "peonify_tasks_cancelled",

		"ackKeep":     "sqlite_autoindex_peonify_tasks_1",
		"progress":    "sqlite_autoindex_peonify_tasks_1",
		"isCancelled": "sqlite_autoindex_peonify_tasks_1",
		"cancel":      "sqlite_autoindex_peonify_tasks_1",
		"insertDep":   "",
		"insertWait":  "",
		"countDown":   "peonify_deps USING PRIMARY KEY (parent=?)",
		"dropWaits":   "peonify_deps USING PRIMARY KEY (parent=?)",
		"dropDeps":    "peonify_deps USING PRIMARY KEY (parent=?)",
		"unwait":      "peonify_waiting USING PRIMARY KEY (id=?)",
		"wakeUp":      "sqlite_autoindex_peonify_tasks_1",
		"cancelChild": "sqlite_autoindex_peonify_tasks_1",
		"wfExists":    "peonify_tasks_workflow",
		"claimWf":     "sqlite_autoindex_peonify_tasks_1",
		"stateOf":     "sqlite_autoindex_peonify_tasks_1",
		"addWaits":    "peonify_deps USING PRIMARY KEY (parent=?)",

		"runningUse":    "peonify_tasks_running",
		"pendingWindow": "peonify_tasks_pending",
		"pendingRow":    "INTEGER PRIMARY KEY",
		"groupsAfter":   "peonify_tasks_groups",
		"groupsFrom":    "peonify_tasks_groups",
		"groupTasks":    "peonify_tasks_groups",
		"keyHead":       "peonify_tasks_key",
		"bucketGet":     "PRIMARY KEY",
		"bucketPut":     "",
		"claimPicked":   "INTEGER PRIMARY KEY",
	}
	want["ready"] = "peonify_tasks_pending"
	var st stmts
	for _, def := range append(st.defs(), stmtDef{name: "ready", query: readyQuery}) {
		index, ok := want[def.name]
		if !ok {
			t.Errorf("statement %s has no expected plan in this test", def.name)
			continue
		}
		args := make([]any, strings.Count(def.query, "?")) // enough for ?1..?n
		rows, err := s.db.Query("EXPLAIN QUERY PLAN "+def.query, args...)
		if err != nil {
			t.Fatalf("%s: %v", def.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "; ")
		full := false
		for _, table := range []string{"peonify_tasks", "peonify_deps", "peonify_waiting"} {
			if strings.Contains(text, "SCAN "+table+";") || strings.HasSuffix(text, "SCAN "+table) {
				full = true
			}
		}
		if strings.Contains(text, "TEMP B-TREE") || full || !strings.Contains(text, index) {
			t.Errorf("plan of %s = %q, want it to use index %q without a sort or a full scan", def.name, text, index)
		}
	}
}
