package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
)

// A redis store on a Redis Cluster: the entry lists seed nodes in addrs,
// or its url carries them (redis://user:password@node1:6379?addr=node2:6379
// &addr=node3:6379, go-redis's cluster URL form), or cluster: true says
// that url names one node of a cluster. The stream runs on a
// redis.ClusterClient; each queue lives in one slot.

// isCluster reports whether the entry names a Redis Cluster.
func (s *redisSpec) isCluster() bool {
	if len(s.Addrs) > 0 || s.Cluster {
		return true
	}
	u, err := url.Parse(s.URL)
	return err == nil && u.Query().Has("addr")
}

// checkCluster validates the entry's cluster fields.
func (s *redisSpec) checkCluster() error {
	_, err := s.clusterOptions()
	return err
}

// clusterOptions returns the options of the entry's cluster client, or an
// error that names the field at fault.
func (s *redisSpec) clusterOptions() (*redis.ClusterOptions, error) {
	path := s.Common.path
	opts := &redis.ClusterOptions{}
	if s.URL != "" {
		u, err := url.Parse(s.URL)
		if err == nil && u.Path != "" && u.Path != "/" && u.Path != "/0" {
			return nil, yamlfile.Errorf(path+".url", "a Redis Cluster has database 0 only: remove %q from the URL", u.Path)
		}
		if err == nil && u.Path != "" {
			u.Path = ""
			s.URL = u.String()
		}
		if opts, err = redis.ParseClusterURL(s.URL); err != nil {
			return nil, yamlfile.Errorf(path+".url", "not a Redis Cluster URL: %s (e.g. redis://:${REDIS_PASSWORD}@node1:6379?addr=node2:6379&addr=node3:6379, rediss:// for TLS)",
				redactErr(err, s.URL))
		}
	}
	for i, a := range s.Addrs {
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n <= 0 || n > 65535 {
			return nil, yamlfile.Errorf(fmt.Sprintf("%s.addrs[%d]", path, i), "%q is not host:port: give a node of the cluster, e.g. redis-1:6379", a)
		}
		opts.Addrs = append(opts.Addrs, a)
	}
	if len(opts.Addrs) == 0 {
		return nil, yamlfile.Errorf(path+".addrs", "required with cluster: true and no url: the cluster's nodes, e.g. [redis-1:6379, redis-2:6379, redis-3:6379]")
	}
	return opts, nil
}

// redisCluster returns the client of the cluster s names, connecting on
// first use. Entries with the same seeds and URL share a client.
func (r *resources) redisCluster(ctx context.Context, s *redisSpec) (*redis.ClusterClient, error) {
	key := s.URL + "\x00" + strings.Join(s.Addrs, ",")
	if c, ok := r.redisClusters[key]; ok {
		return c, nil
	}
	opts, err := s.clusterOptions()
	if err != nil {
		return nil, err
	}
	if s.PoolSize > 0 {
		opts.PoolSize = s.PoolSize
	}
	// Each command's context (the processor's store_timeout) bounds it,
	// not only the client's read timeout.
	opts.ContextTimeoutEnabled = true
	if s.tls != nil {
		tlsCfg := s.tls.Clone()
		if opts.TLSConfig != nil {
			tlsCfg.ServerName = opts.TLSConfig.ServerName
		}
		opts.TLSConfig = tlsCfg
	}
	redis.SetLogger(redisLogger{r.log})
	c := redis.NewClusterClient(opts)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Ping(pingCtx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("connect to the redis cluster at %s: %s", strings.Join(opts.Addrs, ", "), redactErr(err, s.URL))
	}
	if r.redisClusters == nil {
		r.redisClusters = make(map[string]*redis.ClusterClient)
	}
	r.redisClusters[key] = c
	return c, nil
}
