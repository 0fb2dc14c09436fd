package resend

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peonify/peonify"
)

// Check names the intake's own Config fields.
func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		c     Config
		field string
	}{
		{Config{Intake: "x"}, ""},
		{Config{Intake: "x", Window: -1}, ""},
		{Config{Intake: "x", MaxIDs: -1}, "x.Config.ResendMaxIDs"},
		{Config{Intake: "x", Window: -1, Path: "f"}, "x.Config.ResendLog"},
	} {
		err := tc.c.Check()
		var ce *peonify.ConfigError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v, want nil", tc.c, err)
		case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field):
			t.Errorf("%+v: %v, want a ConfigError of %s", tc.c, err, tc.field)
		}
	}
}

// A negative window is off: a nil Window, which has seen nothing.
func TestWindowOff(t *testing.T) {
	w, err := OpenWindow(Config{Intake: "x", Window: -1}, slog.New(slog.DiscardHandler))
	if err != nil || w != nil {
		t.Fatalf("OpenWindow = %v, %v; want nil, nil", w, err)
	}
	w.Record("a")
	if w.Seen("a") || w.Close() != nil {
		t.Fatal("a window turned off remembers")
	}
}

// The zero Config opens the default window, and a failure to write the
// file is logged once, while the IDs are still remembered in memory.
func TestWindowLogsWriteFailureOnce(t *testing.T) {
	var logs bytes.Buffer
	w, err := OpenWindow(Config{Intake: "x", Resend: "resend", Path: filepath.Join(t.TempDir(), "r")},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if w.log.Window() != DefaultWindow || w.log.max != DefaultMaxIDs {
		t.Fatalf("window %v of %d IDs, want the defaults", w.log.Window(), w.log.max)
	}
	_ = w.log.f.Close() // every write fails from now on
	w.Record("a")
	w.Record("b")
	if !w.Seen("a") || !w.Seen("b") {
		t.Fatal("IDs not remembered in memory after a write failure")
	}
	if n := strings.Count(logs.String(), "x: cannot write Config.ResendLog"); n != 1 {
		t.Fatalf("the write failure was logged %d times, want once:\n%s", n, logs.String())
	}
	_ = w.Close()
}
