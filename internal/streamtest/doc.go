// Package streamtest holds the test code that every stream package under
// streams/ shares: helpers that fail the test instead of returning errors,
// the Processor drain benchmark, the harness of the scale-out and crash
// tests that run processors in child processes and SIGKILL some of them,
// and the dead-connection checks (DeadConnection, DeadShutdown) that put a
// blackholing Proxy between a processor and its server.
//
// It is written against the peonify interfaces (peonify.Stream,
// peonify.Enqueuer, the Counts method of peonify.Inspector); what a stream
// does its own way (how a child connects, what a killed process held) comes
// in as options and callbacks. Only the _test.go files of the stream
// packages import it.
package streamtest
