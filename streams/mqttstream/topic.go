package mqttstream

import (
	"errors"
	"strings"
)

// splitShare splits "$share/<group>/<filter>" into its group and filter;
// any other filter has no group.
func splitShare(f string) (group, filter string) {
	rest, ok := strings.CutPrefix(f, "$share/")
	if !ok {
		return "", f
	}
	group, filter, ok = strings.Cut(rest, "/")
	if !ok {
		return rest, ""
	}
	return group, filter
}

// checkFilter reports whether f is a valid MQTT topic filter.
func checkFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	if strings.ContainsRune(f, 0) {
		return errors.New("a topic filter must not contain NUL")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("# must be the last level")
		case l != "#" && strings.Contains(l, "#"):
			return errors.New("# must be a whole level")
		case l != "+" && strings.Contains(l, "+"):
			return errors.New("+ must be a whole level")
		}
	}
	return nil
}

// match reports whether topic matches filter (MQTT 5, 4.7). A filter
// starting with a wildcard does not match topics starting with $.
func match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		switch {
		case f == "#":
			return true // also matches the parent level: "a/#" matches "a"
		case i >= len(tl):
			return false
		case f != "+" && f != tl[i]:
			return false
		}
	}
	return len(fl) == len(tl)
}

// overlap reports whether some topic matches both filters.
func overlap(a, b string) bool {
	al, bl := strings.Split(a, "/"), strings.Split(b, "/")
	if dollar(al[0]) != dollar(bl[0]) && (wild(al[0]) || wild(bl[0])) {
		return false // a wildcard first level never matches a $ topic
	}
	for i := 0; ; i++ {
		switch {
		case i == len(al) && i == len(bl):
			return true
		case i == len(al):
			return bl[i] == "#"
		case i == len(bl):
			return al[i] == "#"
		case al[i] == "#" || bl[i] == "#":
			return true
		case al[i] == "+" || bl[i] == "+" || al[i] == bl[i]:
			continue
		default:
			return false
		}
	}
}

func wild(level string) bool   { return level == "+" || level == "#" }
func dollar(level string) bool { return strings.HasPrefix(level, "$") }
