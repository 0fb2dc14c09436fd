package peonifytest

import (
	"strings"
	"unicode/utf8"

	"github.com/peonify/peonify"
)

// testNackChecksOptions checks that a Nack with an unknown Outcome is an
// error that leaves the claim as it was, and that a reason longer than
// peonify.MaxReasonLen, cut inside a character, is kept as a valid UTF-8
// prefix of it of (almost) MaxReasonLen bytes.
func testNackChecksOptions(h *harness) {
	h.enqueue(h.newTask())
	d := h.next()
	if err := h.s.Nack(h.ctx(), d, peonify.NackOptions{Outcome: 42}); err == nil {
		h.t.Errorf("Nack with Outcome 42 returned nil, want an error: an unknown Outcome is an error")
	}
	reason := "x" + strings.Repeat("é", peonify.MaxReasonLen)
	h.nack(d, peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: reason})
	if h.ins == nil {
		return
	}
	info, ok := h.wantState(d.Task.ID, peonify.StateDead, "after a dead Nack with a long reason")
	if !ok {
		return
	}
	if got := info.LastError; !utf8.ValidString(got) || !strings.HasPrefix(reason, got) ||
		len(got) > peonify.MaxReasonLen || len(got) <= peonify.MaxReasonLen-utf8.UTFMax {
		h.t.Errorf("a %d-byte dead reason is kept as %d bytes (valid UTF-8: %t, a prefix: %t), want a valid UTF-8 prefix of at most peonify.MaxReasonLen (%d) bytes, cut by peonify.TruncateReason",
			len(reason), len(got), utf8.ValidString(got), strings.HasPrefix(reason, got), peonify.MaxReasonLen)
	}
}

// testListChecksOptions checks that Inspector.List refuses a negative
// Limit and an unknown State, as peonify.ListOptions.Normalize does.
func testListChecksOptions(h *harness) {
	h.needInspector()
	for _, opts := range []peonify.ListOptions{
		{State: peonify.StateDead, Limit: -1},
		{State: "peonifytest-no-such-state"},
	} {
		if _, err := h.ins.List(h.ctx(), opts); err == nil {
			h.t.Errorf("Inspector.List(%+v) returned nil error, want one (see peonify.ListOptions.Normalize)", opts)
		}
	}
}
