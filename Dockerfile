# The peonify daemon as a minimal container image: a static binary
# (CGO_ENABLED=0: the SQLite driver is pure Go) on an empty base, run as
# a non-root user. See "Running in production" in README.md.
#
#   docker build -t peonify .
#   docker run --rm peonify demo --dashboard=false
#   docker run -v ./peonify.yaml:/etc/peonify/peonify.yaml:ro -p 9090:9090 peonify
#
# exec tasks run commands, and this image has none (no shell either):
# build FROM it, copying in the tools they need, or use http tasks.

ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# vcs.revision and vcs.modified come from .git when it is in the context
# (it is by default: see .dockerignore); without it, -buildvcs=false.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/peonify ./cmd/peonify \
 || CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags='-s -w' -o /out/peonify ./cmd/peonify
# The directories the runtime stage needs, owned by its user: /tmp (peonify
# demo, exec tasks' temporary files) and /var/lib/peonify (a SQLite store).
RUN mkdir -p /out/tmp /out/var/lib/peonify /out/etc/peonify \
 && chmod 1777 /out/tmp \
 && chown 65532:65532 /out/var/lib/peonify \
 && echo 'peonify:x:65532:65532:peonify:/var/lib/peonify:/nonexistent' > /out/etc/passwd \
 && echo 'peonify:x:65532:' > /out/etc/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/ /
USER 65532:65532
WORKDIR /var/lib/peonify
# http.listen in the config; the Kubernetes probes use /healthz and /readyz.
EXPOSE 9090
ENTRYPOINT ["/peonify"]
CMD ["run", "-c", "/etc/peonify/peonify.yaml"]
