package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/peonify/peonify"
)

// These tests check what can be checked here of the deployment files in
// deploy/ and of the Dockerfile: that they agree with the daemon.

// deployDir is deploy/ at the module's root.
const deployDir = "../../deploy"

// storeMetrics are the store-level metrics the autoscaling manifests may
// use (peonifyprom.StoreMetrics, on the daemon's /metrics); the manifests
// must name no others.
var storeMetrics = []string{"peonify_store_tasks", "peonify_store_oldest_pending_seconds"}

// manifest is the part of a Kubernetes object the tests read.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
				Volumes                       []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MaxUnavailable any `yaml:"maxUnavailable"`
		Triggers       []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
		Metrics []struct {
			External struct {
				Metric struct {
					Name string `yaml:"name"`
				} `yaml:"metric"`
			} `yaml:"external"`
		} `yaml:"metrics"`
	} `yaml:"spec"`
	Resources []string `yaml:"resources"` // a kustomization's
}

type container struct {
	Args    []string `yaml:"args"`
	EnvFrom []struct {
		SecretRef struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// readManifests parses the files of deploy/kubernetes, by kind.
func readManifests(t *testing.T) map[string]*manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes (%v)", err)
	}
	out := make(map[string]*manifest)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m manifest
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if m.Kind == "" || m.APIVersion == "" {
			t.Errorf("%s has no kind or apiVersion", f)
		}
		if out[m.Kind] != nil {
			t.Fatalf("%s: a second %s", f, m.Kind)
		}
		out[m.Kind] = &m
	}
	for _, kind := range []string{"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "ScaledObject", "HorizontalPodAutoscaler", "Kustomization"} {
		if out[kind] == nil {
			t.Fatalf("deploy/kubernetes has no %s", kind)
		}
	}
	return out
}

// The example manifests agree with the daemon: the ConfigMap's config is
// valid (peonify run --check) with the Secret's variables, the pod's
// grace period is above the config's whole drain, the probes' paths
// answer on the config's http port, and the objects refer to each other
// by the right names.
func TestKubernetesManifests(t *testing.T) {
	ms := readManifests(t)
	dep, cm, secret := ms["Deployment"], ms["ConfigMap"], ms["Secret"]
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The config, as the pod sees it.
	i := slices.Index(c.Args, "-c")
	if i < 0 || i+1 >= len(c.Args) || c.Args[0] != "run" {
		t.Fatalf("the container's args %q are not run -c FILE", c.Args)
	}
	dir, name := filepath.Split(c.Args[i+1])
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap.Name == cm.Metadata.Name && filepath.Clean(vm.MountPath) == filepath.Clean(dir) {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("the ConfigMap %q is not mounted at %s", cm.Metadata.Name, dir)
	}
	text, ok := cm.Data[name]
	if !ok {
		t.Fatalf("the ConfigMap has no %s", name)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef.Name != secret.Metadata.Name {
		t.Errorf("the container does not take its environment from the Secret %q", secret.Metadata.Name)
	}
	for _, m := range regexp.MustCompile(`\$\{(\w+)\}`).FindAllStringSubmatch(text, -1) {
		if _, ok := secret.StringData[m[1]]; !ok {
			t.Errorf("the config refers to ${%s}, which the Secret does not set", m[1])
		}
	}
	tmp := t.TempDir()
	path := writeFile(t, tmp, name, text)
	check := exec.Command(bin, "run", "-c", path, "--check")
	check.Env = os.Environ()
	for k, v := range secret.StringData {
		check.Env = append(check.Env, k+"="+v)
	}
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("peonify run --check on the ConfigMap's config: %v\n%s", err, out)
	}
	cfg, err := parseConfig([]byte(text), env(secret.StringData))
	if err != nil {
		t.Fatal(err)
	}

	// The grace period covers the whole drain.
	b := shutdownBounds(cfg)
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= b.total {
		t.Errorf("terminationGracePeriodSeconds is %s, not above the drain's bound %s (shutdown_grace %s, shutdown_timeout %s): "+
			"Kubernetes would kill the daemon mid-drain", grace, b.total, b.grace, b.timeout)
	}

	// The probes ask the daemon's own paths, on its http port.
	_, port, _ := strings.Cut(cfg.http.Listen, ":")
	if len(c.Ports) != 1 || fmt.Sprint(c.Ports[0].ContainerPort) != port {
		t.Errorf("the container's ports %+v are not http.listen's port %s", c.Ports, port)
	}
	probes := map[string]*probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("the readiness probe does not ask /readyz")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("the liveness probe does not ask /healthz")
	}
	daemonDir := t.TempDir()
	writeFile(t, daemonDir, "peonify.yaml", "streams:\n  - {kind: sqlite, path: store.db}\n"+
		"tasks:\n  t: {executor: exec, shell: 'true'}\n"+
		"http: {listen: '127.0.0.1:0', dashboard: {enabled: false}}\n")
	d := startDaemon(t, daemonDir, "peonify.yaml")
	admin := d.listenAddr("serving metrics and health checks")
	d.waitLog("peonify: running")
	for what, p := range probes {
		if p == nil {
			continue
		}
		if p.HTTPGet.Port != c.Ports[0].Name && fmt.Sprint(p.HTTPGet.Port) != port {
			t.Errorf("the %s asks port %v, not the container's http port", what, p.HTTPGet.Port)
		}
		waitFor(t, "the daemon to answer the "+what+" "+p.HTTPGet.Path, func() bool {
			code, _ := get(t, admin+p.HTTPGet.Path)
			return code == http.StatusOK
		}, d.stderr)
	}
	// The store metrics the autoscalers use are on /metrics.
	_, metrics := get(t, admin+"/metrics")
	for _, name := range storeMetrics {
		if !strings.Contains(metrics, "\n"+name+"{") {
			t.Errorf("/metrics lacks %s, which the autoscaling manifests use", name)
		}
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d; log:\n%s", code, log)
	}

	// The other objects point at the Deployment's pods.
	labels := dep.Spec.Template.Metadata.Labels
	for _, kind := range []string{"Deployment", "PodDisruptionBudget"} {
		for k, v := range ms[kind].Spec.Selector.MatchLabels {
			if labels[k] != v {
				t.Errorf("the %s's selector %s=%s does not select the pods (labels %v)", kind, k, v, labels)
			}
		}
		if len(ms[kind].Spec.Selector.MatchLabels) == 0 {
			t.Errorf("the %s has no selector", kind)
		}
	}
	if ms["PodDisruptionBudget"].Spec.MaxUnavailable == nil {
		t.Error("the PodDisruptionBudget sets no maxUnavailable")
	}
	for _, kind := range []string{"ScaledObject", "HorizontalPodAutoscaler"} {
		if ref := ms[kind].Spec.ScaleTargetRef.Name; ref != dep.Metadata.Name {
			t.Errorf("the %s scales %q, not the Deployment %q", kind, ref, dep.Metadata.Name)
		}
	}
	for _, tr := range ms["ScaledObject"].Spec.Triggers {
		if tr.Type != "prometheus" || !strings.Contains(tr.Metadata["query"], "peonify_store_") {
			t.Errorf("a ScaledObject trigger is not a Prometheus query on the store metrics: %+v", tr)
		}
	}
	for _, m := range ms["HorizontalPodAutoscaler"].Spec.Metrics {
		if !slices.Contains(storeMetrics, m.External.Metric.Name) {
			t.Errorf("the HPA's external metric %q is none of %v", m.External.Metric.Name, storeMetrics)
		}
	}
	// The autoscalers' label values are a store of the ConfigMap's config
	// and a state the store metrics report: a typo would match no series,
	// and the autoscaler would see no backlog.
	for _, f := range []string{"keda-scaledobject.yaml", "hpa-external.yaml"} {
		data, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", f))
		if err != nil {
			t.Fatal(err)
		}
		stores := regexp.MustCompile(`\bstore(?:=|: )"?([\w-]+)`).FindAllStringSubmatch(string(data), -1)
		if len(stores) == 0 {
			t.Errorf("%s selects no store", f)
		}
		for _, m := range stores {
			if !slices.Contains(cfg.storeNames(), m[1]) {
				t.Errorf("%s selects store %q, which the ConfigMap's config does not have (it has %v)", f, m[1], cfg.storeNames())
			}
		}
		for _, m := range regexp.MustCompile(`\bstate(?:=|: )"?([\w-]+)`).FindAllStringSubmatch(string(data), -1) {
			if !slices.Contains(peonify.States, peonify.State(m[1])) {
				t.Errorf("%s selects state %q, which is none of %v", f, m[1], peonify.States)
			}
		}
	}
	k := ms["Kustomization"]
	for _, r := range k.Resources {
		if !fileExists(filepath.Join(deployDir, "kubernetes", r)) {
			t.Errorf("the kustomization lists %s, which is not there", r)
		}
	}
}

// The autoscaling manifests name only the store metrics of the daemon,
// and each of them.
func TestDeployMetricNames(t *testing.T) {
	seen := make(map[string]bool)
	re := regexp.MustCompile(`\bpeonify_[a-z_]+\b`)
	for _, f := range []string{"kubernetes/keda-scaledobject.yaml", "kubernetes/hpa-external.yaml"} {
		data, err := os.ReadFile(filepath.Join(deployDir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range re.FindAllString(string(data), -1) {
			seen[name] = true
			if !slices.Contains(storeMetrics, name) {
				t.Errorf("%s names the metric %s, which is none of the store metrics %v", f, name, storeMetrics)
			}
		}
	}
	for _, name := range storeMetrics {
		if !seen[name] {
			t.Errorf("the autoscaling manifests do not use %s", name)
		}
	}
}

// readUnit parses a systemd unit file into its section.key values.
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]string)
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// The systemd unit is a sandboxed Type=notify service whose stop timeout
// is above the drain of a config with the processor section's defaults
// (with an http section and tracing on, the longest of them), and
// systemd-analyze verify finds nothing wrong with it.
func TestSystemdUnit(t *testing.T) {
	unitPath := filepath.Join(deployDir, "systemd", "peonify.service")
	u := readUnit(t, unitPath)
	for key, want := range map[string]string{
		"Service.Type":            "notify",
		"Service.NotifyAccess":    "main",
		"Service.DynamicUser":     "yes",
		"Service.ProtectSystem":   "strict",
		"Service.NoNewPrivileges": "yes",
		"Service.StateDirectory":  "peonify",
		"Service.PrivateTmp":      "yes",
		"Service.ProtectHome":     "yes",
		"Service.KillMode":        "mixed",
	} {
		if got := u[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if !strings.Contains(strings.Join(u["Service.ExecStart"], ""), " run -c ") {
		t.Errorf("ExecStart %q does not run peonify run -c", u["Service.ExecStart"])
	}
	cfg, err := parseConfig([]byte("streams:\n  - {kind: sqlite, path: /var/lib/peonify/peonify.db}\n"+
		"tasks:\n  t: {executor: exec, shell: 'true'}\nhttp: {listen: '127.0.0.1:9090'}\n"),
		env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"}))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.tracing.on {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT did not turn tracing on")
	}
	b := shutdownBounds(cfg)
	stop, err := time.ParseDuration(strings.Join(u["Service.TimeoutStopSec"], ""))
	if err != nil || stop <= b.total {
		t.Errorf("TimeoutStopSec=%q (%v), want above the default drain's bound %s", u["Service.TimeoutStopSec"], err, b.total)
	}
	wd, err := time.ParseDuration(strings.Join(u["Service.WatchdogSec"], ""))
	if err != nil || wd < 2*time.Second {
		t.Errorf("WatchdogSec=%q (%v): want a few seconds at least", u["Service.WatchdogSec"], err)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit's fields were checked, but systemd did not verify it")
	}
	// verify checks that the binaries exist: point the unit at the one
	// the tests built.
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unit := writeFile(t, dir, "peonify.service", strings.ReplaceAll(string(data), "/usr/local/bin/peonify", bin))
	cmd := exec.Command(analyze, "verify", unit)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The Dockerfile builds a static binary and runs it as a non-root user
// on an empty base. Where podman is installed, the image's runtime stage
// is built with the binary the Dockerfile's flags make (the build stage's
// golang image cannot be pulled here), and peonify demo runs inside.
func TestContainerImage(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	i := strings.LastIndex(df, "\nFROM ")
	if i < 0 {
		t.Fatal("the Dockerfile has no stages")
	}
	final := df[i+1:]
	if !strings.HasPrefix(final, "FROM scratch\n") {
		t.Errorf("the final stage does not start FROM scratch:\n%s", final)
	}
	if !strings.Contains(df, "CGO_ENABLED=0 go build") {
		t.Error("the Dockerfile does not build with CGO_ENABLED=0")
	}
	user := regexp.MustCompile(`(?m)^USER (\d+)`).FindStringSubmatch(final)
	if user == nil || user[1] == "0" {
		t.Errorf("the final stage runs as %v, want a numeric non-root USER", user)
	}
	if !fileExists("../../.dockerignore") {
		t.Error("no .dockerignore")
	}

	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed (apt-get install podman): the image was not built")
	}
	if testing.Short() {
		t.Skip("-short: the image is not built")
	}
	global, runFlags, err := podmanRuns(t, podman)
	if err != nil {
		t.Skipf("podman is installed, but cannot run a container on this machine (a sandbox without the privileges it needs): %v", err)
	}
	if len(global)+len(runFlags) > 0 {
		t.Logf("podman runs containers here with %q and run flags %q", global, runFlags)
	}
	// The build stage's output, made here as it would make it.
	ctx := t.TempDir()
	out := filepath.Join(ctx, "out")
	for _, d := range []string{"tmp", "var/lib/peonify", "etc/peonify", "etc/ssl/certs"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(out, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(out, "var/lib/peonify"), 65532, 65532); err != nil {
		t.Skipf("cannot give the state directory to the image's user (%v): not root?", err)
	}
	writeFile(t, filepath.Join(out, "etc"), "passwd", "peonify:x:65532:65532:peonify:/var/lib/peonify:/nonexistent\n")
	writeFile(t, filepath.Join(out, "etc"), "group", "peonify:x:65532:\n")
	writeFile(t, filepath.Join(out, "etc/ssl/certs"), "ca-certificates.crt", "")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(out, "peonify"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	containerfile := strings.NewReplacer(
		"COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/", "COPY out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/",
		"COPY --from=build /out/ /", "COPY out/ /",
	).Replace(final)
	if strings.Contains(containerfile, "--from=") {
		t.Fatalf("the final stage copies from the build stage in a way this test does not know:\n%s", final)
	}
	writeFile(t, ctx, "Containerfile", containerfile)
	tag := fmt.Sprintf("localhost/peonify-test:%d", time.Now().UnixNano())
	if b, err := exec.Command(podman, "build", "-q", "-t", tag, "-f", filepath.Join(ctx, "Containerfile"), ctx).CombinedOutput(); err != nil {
		t.Fatalf("podman build: %v\n%s", err, b)
	}
	defer exec.Command(podman, "rmi", "-f", tag).Run()
	args := append(append(slices.Clone(global), "run", "--rm", "--network", "none"), runFlags...)
	runOut, err := exec.Command(podman, append(args, tag, "demo", "--tasks", "50", "--dashboard=false")...).CombinedOutput()
	if err != nil {
		t.Fatalf("peonify demo in the image: %v\n%s", err, runOut)
	}
	if !bytes.Contains(runOut, []byte("succeeded")) {
		t.Errorf("peonify demo in the image printed no summary:\n%s", runOut)
	}
}

// podmanRuns finds how podman can run a FROM scratch container here, if
// it can: it tries one with a file and no command to run, first as is,
// then with lower resource limits (a sandbox may forbid the container's
// process the limits podman asks for by default), then with runc (crun
// does not run on hybrid cgroups). It returns podman's global flags and
// run flags that work, or why none does.
func podmanRuns(t *testing.T, podman string) (global, run []string, err error) {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, dir, "empty", "")
	writeFile(t, dir, "Containerfile", "FROM scratch\nCOPY empty /empty\n")
	tag := fmt.Sprintf("localhost/peonify-probe:%d", time.Now().UnixNano())
	if out, err := exec.Command(podman, "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("podman build: %v: %s", err, bytes.TrimSpace(out))
	}
	defer exec.Command(podman, "rmi", "-f", tag).Run()
	limits := []string{"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"}
	tries := [][2][]string{{nil, nil}, {nil, limits}}
	if _, err := exec.LookPath("runc"); err == nil {
		tries = append(tries, [2][]string{{"--runtime", "runc"}, limits})
	}
	var why []string
	for _, try := range tries {
		// Running /empty fails in any case: a runtime that could start
		// the container says it cannot execute /empty, one that could
		// not says why.
		args := append(append(slices.Clone(try[0]), "run", "--rm", "--network", "none"), try[1]...)
		out, _ := exec.Command(podman, append(args, tag, "/empty")...).CombinedOutput()
		if bytes.Contains(out, []byte("/empty")) {
			return try[0], try[1], nil
		}
		why = append(why, fmt.Sprintf("podman %s: %s", strings.Join(args, " "), bytes.TrimSpace(out)))
	}
	return nil, nil, errors.New(strings.Join(why, "; "))
}
