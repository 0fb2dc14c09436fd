package peonify_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
)

// TestTruncateReasonKeepsUTF8 cuts reasons whose multi-byte characters
// straddle MaxReasonLen at every offset: what is kept is valid UTF-8, a
// prefix of the reason, and at most MaxReasonLen bytes.
func TestTruncateReasonKeepsUTF8(t *testing.T) {
	for _, r := range []string{"é", "€", "😀"} {
		for pad := range utf8.UTFMax {
			reason := strings.Repeat("x", pad) + strings.Repeat(r, peonify.MaxReasonLen)
			got := peonify.TruncateReason(reason)
			if !utf8.ValidString(got) || !strings.HasPrefix(reason, got) ||
				len(got) > peonify.MaxReasonLen || len(got) <= peonify.MaxReasonLen-utf8.UTFMax {
				t.Errorf("%d x's then %q: kept %d bytes, want a valid UTF-8 prefix of at most %d bytes", pad, r, len(got), peonify.MaxReasonLen)
			}
		}
	}
	short := "boom é"
	if got := peonify.TruncateReason(short); got != short {
		t.Errorf("TruncateReason(%q) = %q, want it unchanged", short, got)
	}
	// Invalid UTF-8 is cut at MaxReasonLen minus at most UTFMax-1 bytes.
	junk := strings.Repeat("\x80", 2*peonify.MaxReasonLen)
	if got := peonify.TruncateReason(junk); len(got) != peonify.MaxReasonLen {
		t.Errorf("TruncateReason of continuation bytes kept %d bytes, want %d", len(got), peonify.MaxReasonLen)
	}
}

func FuzzTruncateReason(f *testing.F) {
	f.Add(strings.Repeat("é", peonify.MaxReasonLen))
	f.Add("short")
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) < peonify.MaxReasonLen {
			s += strings.Repeat(s+"x", peonify.MaxReasonLen/(len(s)+1)+1)
		}
		got := peonify.TruncateReason(s)
		if len(got) > peonify.MaxReasonLen || !strings.HasPrefix(s, got) || (utf8.ValidString(s) && !utf8.ValidString(got)) {
			t.Fatalf("TruncateReason kept %d bytes (valid: %t) of %d", len(got), utf8.ValidString(got), len(s))
		}
	})
}

func TestNackOptionsNormalize(t *testing.T) {
	long := strings.Repeat("€", peonify.MaxReasonLen)
	for _, tc := range []struct {
		in, want peonify.NackOptions
		err      bool
	}{
		{in: peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Second, Reason: "x"},
			want: peonify.NackOptions{Outcome: peonify.OutcomeFailed, Delay: time.Second, Reason: "x"}},
		{in: peonify.NackOptions{Outcome: peonify.OutcomeReleased, Delay: -time.Second},
			want: peonify.NackOptions{Outcome: peonify.OutcomeReleased}},
		{in: peonify.NackOptions{Outcome: peonify.OutcomeDead, Delay: time.Second, Reason: long},
			want: peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: peonify.TruncateReason(long)}},
		{in: peonify.NackOptions{}, err: true},
		{in: peonify.NackOptions{Outcome: 7}, err: true},
	} {
		got, err := tc.in.Normalize()
		if tc.err {
			if err == nil {
				t.Errorf("%+v.Normalize() = nil error, want one", tc.in.Outcome)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize of outcome %v, delay %s, %d-byte reason = %v, %s, %d bytes, %v; want %s, %d bytes",
				tc.in.Outcome, tc.in.Delay, len(tc.in.Reason), got.Outcome, got.Delay, len(got.Reason), err, tc.want.Delay, len(tc.want.Reason))
		}
	}
}

func TestListOptionsNormalize(t *testing.T) {
	got, err := peonify.ListOptions{State: peonify.StateDead}.Normalize()
	if err != nil || got.Limit != peonify.DefaultListLimit {
		t.Errorf("Limit 0 normalizes to %d, %v; want %d", got.Limit, err, peonify.DefaultListLimit)
	}
	got, err = peonify.ListOptions{State: peonify.StatePending, Limit: 7, Type: "t", After: "a"}.Normalize()
	if err != nil || got != (peonify.ListOptions{State: peonify.StatePending, Limit: 7, Type: "t", After: "a"}) {
		t.Errorf("a valid ListOptions normalizes to %+v, %v; want it unchanged", got, err)
	}
	for _, bad := range []peonify.ListOptions{{State: peonify.StateDead, Limit: -1}, {}, {State: "nope"}} {
		if _, err := bad.Normalize(); err == nil {
			t.Errorf("%+v.Normalize() = nil error, want one", bad)
		}
	}
}

func TestValidateLimits(t *testing.T) {
	ok := &peonify.Task{Type: strings.Repeat("t", peonify.MaxTypeLen), ID: strings.Repeat("i", peonify.MaxIDLen),
		UniqueKey: strings.Repeat("u", peonify.MaxUniqueKeyLen)}
	if err := ok.Validate(); err != nil {
		t.Errorf("a task at every limit: %v", err)
	}
	for _, bad := range []*peonify.Task{
		{Type: strings.Repeat("t", peonify.MaxTypeLen+1)},
		{Type: "t", ID: strings.Repeat("i", peonify.MaxIDLen+1)},
		{Type: "t", UniqueKey: strings.Repeat("u", peonify.MaxUniqueKeyLen+1)},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("a task over a limit (type %d, ID %d, key %d bytes) is valid", len(bad.Type), len(bad.ID), len(bad.UniqueKey))
		}
	}
}

// nackRecorder passes every Nack on to its stream, after sending the
// options it got to nacks.
type nackRecorder struct {
	*memstream.Stream
	nacks chan peonify.NackOptions
}

func (r nackRecorder) Nack(ctx context.Context, d peonify.Delivery, opts peonify.NackOptions) error {
	r.nacks <- opts
	return r.Stream.Nack(ctx, d, opts)
}

// TestProcessorNormalizesNack checks that the processor hands a stream's
// Nack normalized options: a handler error longer than MaxReasonLen
// reaches the stream cut by TruncateReason.
func TestProcessorNormalizesNack(t *testing.T) {
	long := "x" + strings.Repeat("é", peonify.MaxReasonLen)
	rec := nackRecorder{memstream.New(memstream.Config{}), make(chan peonify.NackOptions, 1)}
	fail := peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return peonify.SkipRetry(errors.New(long)) })
	p, err := peonify.New(peonify.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		err = p.AddTaskList(peonify.TaskList{"long": fail})
	}
	if err == nil {
		err = p.AddStream(rec)
	}
	if err == nil {
		err = rec.Enqueue(context.Background(), &peonify.Task{Type: "long"})
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()
	var got peonify.NackOptions
	select {
	case got = <-rec.nacks:
	case <-ctx.Done():
		t.Error("no Nack within 10s")
	}
	stop()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if got.Outcome != peonify.OutcomeDead || len(got.Reason) > peonify.MaxReasonLen || !utf8.ValidString(got.Reason) || len(got.Reason) < 16 ||
		!strings.Contains(long, got.Reason[len(got.Reason)-16:]) {
		t.Errorf("the stream got a %s Nack with a %d-byte reason (valid UTF-8: %t), want dead with at most MaxReasonLen (%d) bytes",
			got.Outcome, len(got.Reason), utf8.ValidString(got.Reason), peonify.MaxReasonLen)
	}
}
