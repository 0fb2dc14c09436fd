package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
)

// tracingConfig is the tracing section. Every field may be left out: the
// standard OTEL_* environment variables then decide (see README.md).
type tracingConfig struct {
	// Enabled turns tracing on or off; by default it is on when an
	// endpoint is given here or in OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT,
	// or OTEL_TRACES_EXPORTER is otlp.
	Enabled *bool `yaml:"enabled"`
	// Endpoint is the base URL of an OTLP/HTTP receiver, like
	// OTEL_EXPORTER_OTLP_ENDPOINT: spans go to its /v1/traces.
	Endpoint string `yaml:"endpoint"`
	// Headers are sent with every export (e.g. an API key), over those of
	// OTEL_EXPORTER_OTLP_(TRACES_)HEADERS.
	Headers map[string]string `yaml:"headers"`
	// ServiceName is the service.name resource attribute; defaults to
	// OTEL_SERVICE_NAME, else "peonify".
	ServiceName string `yaml:"service_name"`
	// Sampler and SamplerArg are as OTEL_TRACES_SAMPLER(_ARG); default
	// parentbased_always_on.
	Sampler    string   `yaml:"sampler"`
	SamplerArg *float64 `yaml:"sampler_arg"`
	// FlushTimeout bounds the export of the last spans at shutdown, after
	// the processor has drained; defaults to 5s.
	FlushTimeout yamlfile.Duration `yaml:"flush_timeout"`
}

// defaultFlushTimeout is the default of tracing.flush_timeout.
const defaultFlushTimeout = 5 * time.Second

// tracing is the resolved tracing of a config: the file's section over
// the OTEL_* environment. The zero value is off.
type tracing struct {
	on           bool
	url          string // the full URL spans are posted to
	headers      map[string]string
	serviceName  string
	sampler      string
	samplerArg   float64
	flushTimeout time.Duration

	exportTimeout time.Duration // bounds one export, retries included
}

// resolve combines the section with the OTEL_* variables of lookupEnv:
// the file's fields win, the environment fills the others.
// OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn tracing off
// whatever the file says.
func (tc *tracingConfig) resolve(lookupEnv func(string) (string, bool)) (tracing, error) {
	getenv := func(k string) string { v, _ := lookupEnv(k); return strings.TrimSpace(v) }
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return tracing{}, nil
	}
	envOn := false
	switch exp := strings.ToLower(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return tracing{}, nil
	case "otlp":
		envOn = true
	case "":
	default:
		return tracing{}, fmt.Errorf("OTEL_TRACES_EXPORTER is %q: this build exports traces with otlp only (or none)", exp)
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := getenv(k); p != "" {
			if p != "http/protobuf" {
				return tracing{}, fmt.Errorf("%s is %q: this build exports OTLP over HTTP only; use http/protobuf (port 4318) or leave it unset", k, p)
			}
			break
		}
	}
	t := tracing{headers: map[string]string{}, serviceName: "peonify", sampler: "parentbased_always_on", samplerArg: 1,
		flushTimeout: defaultFlushTimeout, exportTimeout: 10 * time.Second}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} { // the second wins
		if err := parseOTLPHeaders(getenv(k), t.headers); err != nil {
			return tracing{}, fmt.Errorf("%s: %w", k, err)
		}
	}
	for k, v := range tc.Headers {
		t.headers[k] = v
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"} {
		if v := getenv(k); v != "" {
			ms, err := strconv.Atoi(v)
			if err != nil || ms <= 0 {
				return tracing{}, fmt.Errorf("%s is %q: give the export timeout in milliseconds, e.g. 10000", k, v)
			}
			t.exportTimeout = time.Duration(ms) * time.Millisecond
			break
		}
	}
	switch {
	case tc.Endpoint != "":
		u, err := otlpURL(tc.Endpoint, true)
		if err != nil {
			return tracing{}, yamlfile.Errorf("tracing.endpoint", "%v", err)
		}
		t.url = u
	case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		u, err := otlpURL(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), false)
		if err != nil {
			return tracing{}, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: %w", err)
		}
		t.url = u
	case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		u, err := otlpURL(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), true)
		if err != nil {
			return tracing{}, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
		t.url = u
	}
	t.on = t.url != "" || envOn
	if tc.Enabled != nil {
		t.on = *tc.Enabled
	}
	if !t.on {
		return tracing{}, nil
	}
	if t.url == "" {
		t.url = "http://localhost:4318/v1/traces" // the OpenTelemetry default
	}
	if s := getenv("OTEL_SERVICE_NAME"); s != "" {
		t.serviceName = s
	}
	if tc.ServiceName != "" {
		t.serviceName = tc.ServiceName
	}
	samplerField, argField := "tracing.sampler", "tracing.sampler_arg"
	if tc.Sampler != "" {
		t.sampler = tc.Sampler
	} else if s := getenv("OTEL_TRACES_SAMPLER"); s != "" {
		t.sampler, samplerField = s, "OTEL_TRACES_SAMPLER"
	}
	if tc.SamplerArg != nil {
		t.samplerArg = *tc.SamplerArg
	} else if s := getenv("OTEL_TRACES_SAMPLER_ARG"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return tracing{}, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG is %q: use a ratio from 0 to 1", s)
		}
		t.samplerArg, argField = f, "OTEL_TRACES_SAMPLER_ARG"
	}
	if _, err := t.sdkSampler(); err != nil {
		if strings.HasPrefix(samplerField, "tracing.") {
			return tracing{}, yamlfile.Errorf(samplerField, "%v", err)
		}
		return tracing{}, fmt.Errorf("%s: %w", samplerField, err)
	}
	if t.samplerArg < 0 || t.samplerArg > 1 {
		if strings.HasPrefix(argField, "tracing.") {
			return tracing{}, yamlfile.Errorf(argField, "is %g: use a ratio from 0 to 1", t.samplerArg)
		}
		return tracing{}, fmt.Errorf("%s is %g: use a ratio from 0 to 1", argField, t.samplerArg)
	}
	if tc.FlushTimeout < 0 {
		return tracing{}, yamlfile.Errorf("tracing.flush_timeout", "must not be negative (leave it out for %s)", defaultFlushTimeout)
	}
	if tc.FlushTimeout > 0 {
		t.flushTimeout = time.Duration(tc.FlushTimeout)
	}
	return t, nil
}

// parseOTLPHeaders adds the headers of an OTEL_EXPORTER_OTLP_HEADERS
// value (key=value pairs, comma-separated, values URL-encoded) to h.
func parseOTLPHeaders(v string, h map[string]string) error {
	if v == "" {
		return nil
	}
	for _, pair := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("%q is not key=value: write the headers as key1=value1,key2=value2", pair)
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("the value of %s is not URL-encoded: %w", k, err)
		}
		h[k] = dec
	}
	return nil
}

// otlpURL checks an endpoint URL and, for a base endpoint, appends the
// traces path as the OTLP exporter specification says.
func otlpURL(raw string, base bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an http:// or https:// URL of an OTLP/HTTP receiver (e.g. http://otel-collector:4318)", raw)
	}
	if base {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	}
	return u.String(), nil
}

// sdkSampler returns the sampler named as in OTEL_TRACES_SAMPLER.
func (t *tracing) sdkSampler() (sdktrace.Sampler, error) {
	switch strings.ToLower(t.sampler) {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(t.samplerArg), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.samplerArg)), nil
	}
	return nil, fmt.Errorf("%q is not a sampler: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", t.sampler)
}

// start returns the tracer provider that exports the daemon's spans, and
// a function that flushes them within the flush timeout and stops it.
// Export errors are logged as warnings; they never stop the daemon.
func (t *tracing) start(ctx context.Context, log *slog.Logger) (*sdktrace.TracerProvider, func(), error) {
	sampler, err := t.sdkSampler()
	if err != nil {
		return nil, nil, err
	}
	exp := newOTLPExporter(t.url, t.headers, t.exportTimeout)
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv(),
		resource.WithAttributes(semconv.ServiceName(t.serviceName)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("tracing: the resource attributes (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("peonify: tracing: "+err.Error(), "endpoint", t.url)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	log.Info("peonify: exporting traces", "endpoint", t.url, "service", t.serviceName, "sampler", t.sampler)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), t.flushTimeout)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("peonify: tracing: the last spans were not all exported", "err", err, "flush_timeout", t.flushTimeout)
		}
	}
	return tp, stop, nil
}
