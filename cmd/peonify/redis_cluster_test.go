package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify/internal/testcluster"
)

func TestRedisClusterConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, entry, want string }{
		{"addr not host:port", "{kind: redis, addrs: ['redis-1:6379', 'redis-2']}", "streams[0].addrs[1]: \"redis-2\" is not host:port"},
		{"cluster without nodes", "{kind: redis, cluster: true}", "streams[0].addrs: required with cluster: true and no url"},
		{"cluster url scheme", "{kind: redis, url: 'http://a:1?addr=b:2'}", "streams[0].url: not a Redis Cluster URL"},
		{"cluster database", "{kind: redis, url: 'redis://a:1/3?addr=b:2'}", "streams[0].url: a Redis Cluster has database 0 only"},
		{"negative wait_replicas", "{kind: redis, addrs: ['a:1'], wait_replicas: -1}", "streams[0].wait_replicas: must not be negative"},
		{"short wait_timeout", "{kind: redis, url: 'redis://a', wait_replicas: 1, wait_timeout: 10us}", "streams[0].wait_timeout: must be at least 1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte("streams:\n  - "+tc.entry+"\n"+tasksOnly), env(nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, tc.want)
			}
		})
	}
	for _, entry := range []string{
		"{kind: redis, addrs: ['redis-1:6379', '10.0.0.2:6380'], wait_replicas: 1}",
		"{kind: redis, url: 'redis://:pw@redis-1:6379?addr=redis-2:6379&addr=redis-3:6379'}",
		"{kind: redis, url: 'rediss://redis-1:6379', cluster: true}",
	} {
		if _, err := parseConfig([]byte("streams:\n  - "+entry+"\n"+tasksOnly), env(nil)); err != nil {
			t.Errorf("%s: %v", entry, err)
		}
	}
}

// TestRunRedisCluster runs the daemon on a queue of a Redis Cluster of 3
// masters with a replica each, given as a list of nodes in the file and as
// a cluster URL to the store flags, waiting for a replica on every write.
func TestRunRedisCluster(t *testing.T) {
	rc := testcluster.Redis(t)
	addrs := rc.Addrs()
	queue := fmt.Sprintf("peonify-cli-test-%d", time.Now().UnixNano())
	url := "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
	runBrokerCase(t, brokerCase{
		entry:  "kind: redis\n    addrs: ['" + strings.Join(addrs, "', '") + "']\n    wait_replicas: 1\n    queue: " + queue,
		direct: []string{"--redis", url, "--queue", queue},
		dedup:  true,
	})
}
