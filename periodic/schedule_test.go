package periodic

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // CRON_TZ tests must not depend on the machine's zone files
)

var someTime = time.Date(2025, 3, 14, 10, 17, 42, 500, time.UTC)

func TestParseSpecValid(t *testing.T) {
	tests := []struct {
		spec       string
		after      string // RFC 3339
		next, prev string
	}{
		{"*/5 * * * *", "2025-03-14T10:17:42Z", "2025-03-14T10:20:00Z", "2025-03-14T10:15:00Z"},
		{"30 */5 * * * *", "2025-03-14T10:17:42Z", "2025-03-14T10:20:30Z", "2025-03-14T10:15:30Z"},
		{"0 30 9 * * MON-FRI", "2025-03-14T10:17:42Z", "2025-03-17T09:30:00Z", "2025-03-14T09:30:00Z"}, // Friday
		{"@hourly", "2025-03-14T10:17:42Z", "2025-03-14T11:00:00Z", "2025-03-14T10:00:00Z"},
		{"@daily", "2025-03-14T10:17:42Z", "2025-03-15T00:00:00Z", "2025-03-14T00:00:00Z"},
		{"@yearly", "2025-03-14T10:17:42Z", "2026-01-01T00:00:00Z", "2025-01-01T00:00:00Z"},
		{"0 0 29 2 *", "2025-03-14T10:17:42Z", "2028-02-29T00:00:00Z", "2024-02-29T00:00:00Z"},
		{"  @every 1h  ", "2025-03-14T10:17:42Z", "2025-03-14T11:00:00Z", "2025-03-14T10:00:00Z"},
		{"@every 7m", "2025-03-14T10:17:42Z", "2025-03-14T10:18:00Z", "2025-03-14T10:11:00Z"}, // multiples of 7m since 1970
		{"@every 90s", "2025-03-14T10:17:42Z", "2025-03-14T10:18:00Z", "2025-03-14T10:16:30Z"},
		{"0 9 * * *", "2025-07-01T12:00:00Z", "2025-07-02T09:00:00Z", "2025-07-01T09:00:00Z"}, // UTC by default
		{"CRON_TZ=America/New_York 0 9 * * *", "2025-07-01T12:00:00Z", "2025-07-01T13:00:00Z", "2025-06-30T13:00:00Z"},
		{"TZ=Asia/Tokyo @daily", "2025-07-01T12:00:00Z", "2025-07-01T15:00:00Z", "2025-06-30T15:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			s, err := parseSpec(tt.spec, time.UTC, someTime)
			if err != nil {
				t.Fatalf("parseSpec: %v", err)
			}
			after := at(t, tt.after)
			if got := s.next(after); !got.Equal(at(t, tt.next)) {
				t.Errorf("next(%s) = %s, want %s", tt.after, got.UTC().Format(time.RFC3339), tt.next)
			}
			if got := s.prev(after); !got.Equal(at(t, tt.prev)) {
				t.Errorf("prev(%s) = %s, want %s", tt.after, got.UTC().Format(time.RFC3339), tt.prev)
			}
		})
	}
}

func TestParseSpecLocation(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseSpec("0 9 * * *", paris, someTime)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.next(at(t, "2025-07-01T00:00:00Z")), at(t, "2025-07-01T07:00:00Z"); !got.Equal(want) {
		t.Errorf("09:00 in Paris in summer = %s, want %s", got.UTC(), want)
	}
	// A CRON_TZ prefix beats Config.Location.
	s, err = parseSpec("CRON_TZ=UTC 0 9 * * *", paris, someTime)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.next(at(t, "2025-07-01T00:00:00Z")), at(t, "2025-07-01T09:00:00Z"); !got.Equal(want) {
		t.Errorf("CRON_TZ=UTC 09:00 = %s, want %s", got.UTC(), want)
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"* * *", "expected 5 to 6 fields, found 3"},
		{"* * * * * * *", "expected 5 to 6 fields, found 7"},
		{"61 * * * *", "above maximum"},
		{"* 24 * * *", "above maximum"},
		{"*/0 * * * *", "step of range should be a positive number"},
		{"a b c d e", "failed to parse int"},
		{"@fortnightly", "unrecognized descriptor"},
		{"@every", "unrecognized descriptor"},
		{"@every soon", "failed to parse duration"},
		{"@every 500ms", "at least 1s"},
		{"@every 0s", "at least 1s"},
		{"@every -1m", "at least 1s"},
		{"@every 1500ms", "whole number of seconds"},
		{"0 0 30 2 *", "never fires"},
		{"CRON_TZ=Nowhere/Atlantis * * * * *", "bad location"},
		{"CRON_TZ=UTC", "not followed by a space and a schedule"},
		{"TZ=UTC", "not followed by a space and a schedule"},
		{"TZ=UTC\t@daily", "not followed by a space and a schedule"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := parseSpec(tt.spec, time.UTC, someTime)
			if err == nil {
				t.Fatalf("parseSpec(%q) succeeded, want an error containing %q", tt.spec, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseSpec(%q) = %q, want it to contain %q", tt.spec, err, tt.want)
			}
		})
	}
}

func TestSpecErrorSaysHowToFix(t *testing.T) {
	s, err := New(newStore(time.Now), Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Add(Job{Name: "report", Spec: "* * *", Task: taskTemplate})
	var se *SpecError
	if !errors.As(err, &se) {
		t.Fatalf("Add with a bad spec returned %v, want a *SpecError", err)
	}
	if se.Job != "report" || se.Spec != "* * *" || se.Err == nil {
		t.Errorf("SpecError = %+v, want Job, Spec and Err set", se)
	}
	for _, want := range []string{`job "report"`, `"* * *"`, "found 3", `"*/5 * * * *"`, `"@every 10m"`, "CRON_TZ="} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// TestPrevMatchesBruteForce checks prev against a walk of next over many
// schedules and times, including dense and sparse ones and a DST change.
func TestPrevMatchesBruteForce(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	specs := []string{
		"* * * * * *", "*/7 * * * * *", "0 */13 * * * *", "15 2 * * *", "0 9 * * MON-FRI",
		"* 9 * * * *", "0 0 1 */3 *", "30 2 * * SUN", "@every 61s", "@every 5h",
	}
	starts := []time.Time{
		at(t, "2025-03-09T00:00:00Z"), // the night New York springs forward
		at(t, "2025-11-02T03:30:00Z"), // and falls back
		someTime,
	}
	for _, spec := range specs {
		s, err := parseSpec(spec, ny, someTime)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		for _, start := range starts {
			// Walk the slots from a known slot and probe prev between them.
			slot := s.prev(start)
			for range 40 {
				n := s.next(slot)
				for _, probe := range []time.Time{slot, slot.Add(time.Nanosecond), slot.Add(n.Sub(slot) / 2), n.Add(-time.Nanosecond)} {
					if got := s.prev(probe); !got.Equal(slot) {
						t.Fatalf("%s: prev(%s) = %s, want %s", spec, probe, got, slot)
					}
				}
				slot = n
			}
		}
	}
}

// FuzzParseSpec checks that no spec makes the parser panic or accept a
// schedule that cannot produce slots.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "0 30 9 * * MON-FRI", "@every 1h", "CRON_TZ=UTC @daily", "TZ=", "0-59/0 * * * *", "1-2-3 * * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := parseSpec(spec, time.UTC, someTime)
		if err != nil {
			return
		}
		n := s.next(someTime)
		if n.IsZero() || !n.After(someTime) {
			t.Fatalf("%q: next(%s) = %s", spec, someTime, n)
		}
		if p := s.prev(n); !p.Equal(n) {
			t.Fatalf("%q: prev(next) = %s, want %s", spec, p, n)
		}
	})
}
