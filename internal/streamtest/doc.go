// Package streamtest holds the test code that every stream package under
// streams/ shares, and that the root, periodic, executor and CLI tests use
// too: helpers that fail the test instead of returning errors (Run,
// RunUntil and Register for a processor, CloseAtEnd, SyncBuffer, Processes
// to find a task's processes in /proc), a Clock the test moves by hand, the Processor drain benchmark, the dead-connection checks
// (DeadConnection, DeadShutdown) that put a blackholing Proxy between a
// processor and its server (the Proxy also partitions, adds latency with
// jitter and a bandwidth limit, and resets connections mid-reply, for
// chaostest's network-fault scenarios), and the child-process harness (Child,
// StartChild, StartMain, Orders) of every test that runs part of itself in
// another process and signals or kills it.
//
// The harness is the one crash-test machinery's process half: the chaos
// suite (chaostest) starts its processor processes with it, and so do the
// stream packages' crash and scale-out tests (internal/crashtest) and the
// intakes' durability tests. What those processes did is recorded in a
// chaostest.Ledger and judged by chaostest's History.Verify, the one
// definition of "nothing lost, duplicates bounded"; streamtest does not
// import chaostest, whose own tests import streamtest.
//
// It is written against the peonify interfaces (peonify.Stream,
// peonify.Enqueuer, the Counts method of peonify.Inspector); what a stream
// does its own way (how a child connects, what a killed process held) comes
// in as options and callbacks. Only _test.go files import it.
package streamtest
