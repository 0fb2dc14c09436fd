// Package testcluster starts clusters of the servers Peonify's streams run
// on, for tests: a Redis Cluster, a JetStream cluster, a Postgres primary
// with a streaming replica. Each node is a process of the test's own, on
// ports of its own, with its data in the test's temporary directory; the
// cluster is stopped and removed when the test ends. The shared servers the
// other tests use are never touched.
//
// A test that starts a cluster needs the server's binaries; without them it
// skips, or fails when PEONIFY_REQUIRE_SERVICES=1.
package testcluster
