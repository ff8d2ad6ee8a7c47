# syntax=docker/dockerfile:1
# tokex sidecar image.
#
#   docker build -t tokex:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Build: the same `cargo build --locked --release` that scripts/test.sh and the benchmark use
# (Cargo.lock pinned; only Cargo.toml, Cargo.lock and src/ enter the context, see .dockerignore).
# Run: distroless `cc` (glibc, libgcc, CA certificates, tzdata; no shell, no package manager) as
# the numeric non-root user 65532, so Kubernetes' `runAsNonRoot: true` can verify it without a
# `runAsUser`. tokex writes nothing to disk (config and credentials are read-only mounts, logs go
# to stderr), so the container runs with `readOnlyRootFilesystem: true` and needs no volume for
# scratch space. TLS trust is tokex's built-in Mozilla roots plus each route's or authority's
# `ca_file`; the image's CA bundle is there for anything else.
# Linted by hadolint in scripts/test.sh (rules and required labels: .hadolint.yaml).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep the crate registry and incremental target dir between builds; the
# binary is copied out of the cached target dir within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release \
 && install -m 0755 target/release/tokex /tokex

FROM gcr.io/distroless/cc-debian12:nonroot
# VERSION follows Cargo.toml's `version` (scripts/check_deploy.py keeps them equal).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tokex" \
      org.opencontainers.image.description="Sidecar proxy that performs OAuth 2.0 Token Exchange (RFC 8693) on outbound calls" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/kubernetes.md" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /tokex /usr/local/bin/tokex
# 65532 is distroless' `nonroot`; numeric so the kubelet can check runAsNonRoot.
USER 65532:65532
# 15001: egress listener (keep it on 127.0.0.1 in a pod); 15000: admin (/healthz /readyz /metrics).
EXPOSE 15001 15000
ENTRYPOINT ["tokex"]
CMD ["run", "--config", "/etc/tokex/tokex.yaml"]
