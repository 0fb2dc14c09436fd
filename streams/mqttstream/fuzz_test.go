package mqttstream

import (
	"strings"
	"testing"
)

// FuzzFilters checks the filter functions that guard Config.Routes
// against each other on arbitrary filters and topics: a topic matched by
// two valid filters means they overlap, and no input panics.
func FuzzFilters(f *testing.F) {
	f.Add("a/+/c", "a/#", "a/b/c")
	f.Add("+/x", "$SYS/#", "$SYS/x")
	f.Add("a/b", "a/b/#", "a/b")
	f.Add("#", "+", "")
	f.Add("a//b", "a/+/b", "a//b")
	f.Fuzz(func(t *testing.T, a, b, topic string) {
		splitShare(a)
		if checkFilter(a) != nil || checkFilter(b) != nil {
			return
		}
		if strings.ContainsAny(topic, "+#") || topic == "" {
			return // not a topic name
		}
		if match(a, topic) && match(b, topic) && !overlap(a, b) {
			t.Fatalf("%q matches %q and %q, but overlap says they are disjoint", topic, a, b)
		}
		if overlap(a, b) != overlap(b, a) {
			t.Fatalf("overlap(%q, %q) is not symmetric", a, b)
		}
	})
}
