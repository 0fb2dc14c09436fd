package natsstream

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/streamtest"
)

// TestLongUTF8ReasonIsInspectable dead-letters a task with a reason longer
// than peonify.MaxReasonLen whose cut falls inside a character, and checks the
// Inspector shows a valid UTF-8 prefix of it.
func TestLongUTF8ReasonIsInspectable(t *testing.T) {
	js := testJS(t)
	s, _ := newTestStream(t, js, Config{})
	ctx := streamtest.Context(t)
	tk := &peonify.Task{Type: "t"}
	if err := s.Enqueue(ctx, tk); err != nil {
		t.Fatal(err)
	}
	d := streamtest.PollUntil(t, s, 1, 5*time.Second)[0]
	reason := "x" + strings.Repeat("é", peonify.MaxReasonLen)
	if err := s.Nack(ctx, d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: reason}); err != nil {
		t.Fatal(err)
	}
	info, err := s.Get(ctx, tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !utf8.ValidString(info.LastError) || !strings.HasPrefix(reason, info.LastError) || len(info.LastError) < peonify.MaxReasonLen-utf8.UTFMax {
		t.Errorf("dead reason kept as %d bytes (valid UTF-8: %t), want a valid prefix of the reason of about %d bytes",
			len(info.LastError), utf8.ValidString(info.LastError), peonify.MaxReasonLen)
	}
}

// FuzzHeaderText checks that headerText keeps valid UTF-8 valid, never
// keeps more than peonify.MaxReasonLen bytes, and leaves no line break.
func FuzzHeaderText(f *testing.F) {
	f.Add("x" + strings.Repeat("é", peonify.MaxReasonLen))
	f.Add(strings.Repeat("😀", peonify.MaxReasonLen/3) + "\r\n")
	f.Add(strings.Repeat("\x80", peonify.MaxReasonLen+10))
	f.Fuzz(func(t *testing.T, s string) {
		got := headerText(s)
		if len(got) > peonify.MaxReasonLen {
			t.Fatalf("kept %d bytes, more than %d", len(got), peonify.MaxReasonLen)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("cut valid UTF-8 into invalid UTF-8: %q", got[max(0, len(got)-8):])
		}
		if strings.ContainsAny(got, "\r\n") {
			t.Fatal("kept a line break")
		}
	})
}

// TestName: the processor names the stream "nats:" and its JetStream
// stream, the kind:name form every stream uses.
func TestName(t *testing.T) {
	s, cfg := newTestStream(t, testJS(t), Config{})
	if got, want := s.Name(), "nats:"+cfg.Stream; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}
