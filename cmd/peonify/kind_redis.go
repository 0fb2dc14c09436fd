package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/redisstream"
)

// redisSpec is a stream of kind redis: redisstream.
type redisSpec struct {
	Common         streamCommon      `yaml:",inline"`
	URL            string            `yaml:"url"`             // required unless addrs: redis://user:password@host:6379/0
	Addrs          []string          `yaml:"addrs"`           // a Redis Cluster's seed nodes, host:port (redis_cluster.go)
	Cluster        bool              `yaml:"cluster"`         // url names one node of a Redis Cluster
	WaitReplicas   int               `yaml:"wait_replicas"`   // replicas each acknowledged write waits for; 0: none
	WaitTimeout    yamlfile.Duration `yaml:"wait_timeout"`    // how long it waits; defaults to 1s
	Queue          string            `yaml:"queue"`           // defaults to "default"
	Prefix         string            `yaml:"prefix"`          // defaults to "peonify"
	Consumer       string            `yaml:"consumer"`        // defaults to hostname-pid-random
	Lease          yamlfile.Duration `yaml:"lease"`           // defaults to 30s
	RescueInterval yamlfile.Duration `yaml:"rescue_interval"` // defaults to min(1s, lease/2)
	DedupWindow    yamlfile.Duration `yaml:"dedup_window"`    // defaults to 5m; negative: off
	KeepDead       yamlfile.Duration `yaml:"keep_dead"`       // defaults to 7 days; negative: until deleted
	// ResultRetention keeps done tasks with a result or in a workflow;
	// defaults to 24h.
	ResultRetention yamlfile.Duration `yaml:"result_retention"`
	PoolSize        int               `yaml:"pool_size"` // connections for this URL; defaults to go-redis's
	TLS             tlsFiles          `yaml:",inline"`

	tls *tls.Config // built by check
}

func (s *redisSpec) common() *streamCommon { return &s.Common }

// forgetsDone is false: Redis remembers IDs for dedup_window.
func (s *redisSpec) forgetsDone() bool { return false }

func (s *redisSpec) payloadLimit(*resources) (int64, string) {
	return 512 << 20, "Redis's largest string (proto-max-bulk-len)"
}

// redisKind is the kind redis, which --redis names: a queue on Redis
// Streams, shared by any number of processors.
func redisKind() kind {
	return kind{name: "redis", limits: true, tracks: true,
		new: func() streamSpec { return new(redisSpec) },
		flag: queueFlag("redis", "a Redis server `URL` (with --queue)", "default", "Redis queue", nil,
			func(url, queue string, _ *storeFlags) storeSpec { return &redisSpec{URL: url, Queue: queue} })}
}

func (s *redisSpec) check() error {
	path := s.Common.path
	if s.isCluster() {
		if err := s.checkCluster(); err != nil {
			return err
		}
	} else if s.URL == "" {
		return yamlfile.Errorf(path+".url", "required: the server's address, e.g. redis://:${REDIS_PASSWORD}@redis:6379/0 (rediss:// for TLS), or addrs: the nodes of a Redis Cluster")
	} else if _, err := redis.ParseURL(s.URL); err != nil {
		return yamlfile.Errorf(path+".url", "not a Redis URL: %s", redactErr(err, s.URL))
	}
	if s.Queue == "" {
		s.Queue = "default"
	}
	if s.Common.Name == "" {
		s.Common.Name = "redis:" + s.Queue
	}
	if s.PoolSize < 0 {
		return yamlfile.Errorf(path+".pool_size", "must not be negative (0 means go-redis's default, 10 per CPU)")
	}
	var err error
	if s.tls, err = s.TLS.config(path); err != nil {
		return err
	}
	return libraryError(path, s, s.config(nil).Validate())
}

func (s *redisSpec) config(r *resources) redisstream.Config {
	cfg := redisstream.Config{
		Queue:           s.Queue,
		Prefix:          s.Prefix,
		Consumer:        s.Consumer,
		Lease:           time.Duration(s.Lease),
		RescueInterval:  time.Duration(s.RescueInterval),
		DedupWindow:     time.Duration(s.DedupWindow),
		KeepDead:        time.Duration(s.KeepDead),
		ResultRetention: time.Duration(s.ResultRetention),
		WaitReplicas:    s.WaitReplicas,
		WaitTimeout:     time.Duration(s.WaitTimeout),
	}
	if r != nil {
		cfg.Logger = r.log
	}
	return cfg
}

func (s *redisSpec) open(ctx context.Context, r *resources) (peonify.Stream, error) {
	var c redis.UniversalClient
	var err error
	if s.isCluster() {
		c, err = r.redisCluster(ctx, s)
	} else {
		c, err = r.redis(ctx, s.URL, s.PoolSize, s.tls)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	st, err := redisstream.New(c, s.config(r))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Common.path, err)
	}
	return st, nil
}
