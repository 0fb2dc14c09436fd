package pgstream

import "github.com/peonify/peonify"

var _ peonify.PollLimiter = (*Stream)(nil)

// MaxPoll returns the most tasks one Poll claims, 10,000, whatever it is
// asked for (peonify.PollLimiter): a processor with room for more then
// takes a full claim for a sign of more work and polls again at once,
// rather than resting as if the queue had run dry.
func (s *Stream) MaxPoll() int { return maxBatch }
