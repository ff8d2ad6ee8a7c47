# syntax=docker/dockerfile:1
# tokex images: the sidecar (the default target) and, for transparent mode, the init image that
# runs `tokex init` (docs/kubernetes.md, "Transparent mode").
#
#   docker build -t tokex:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker build --target init -t tokex-init:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Build: the same `cargo build --locked --release` that scripts/test.sh and the benchmark use
# (Cargo.lock pinned; only Cargo.toml, Cargo.lock and src/ enter the context, see .dockerignore).
# Both images carry the same binary from one build stage.
#
# Sidecar: distroless `cc` (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager) as the numeric non-root user 65532, so Kubernetes' `runAsNonRoot: true` can verify it
# without a `runAsUser`. tokex writes nothing to disk (config and credentials are read-only
# mounts, logs go to stderr), so the container runs with `readOnlyRootFilesystem: true` and needs
# no volume for scratch space. TLS trust is tokex's built-in Mozilla roots plus each route's or
# authority's `ca_file`; the image's CA bundle is there for anything else.
#
# Init: Debian slim with nftables and iptables (both back ends), because `tokex init` installs
# the redirect through the system's `nft` or `iptables-restore`, which distroless lacks. It runs
# as root (the kernel only takes rules from a process with NET_ADMIN in the pod's namespace) and
# exits once the redirect is proven; it never serves traffic.
# Linted by hadolint in scripts/test.sh (rules and required labels: .hadolint.yaml).

ARG RUST_VERSION=1.95
# VERSION follows Cargo.toml's `version` (scripts/check_deploy.py keeps them equal).
ARG VERSION=0.1.0
ARG REVISION=unknown

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# The cache mounts keep the crate registry and incremental target dir between builds; the
# binary is copied out of the cached target dir within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release \
 && install -m 0755 target/release/tokex /tokex

# Same Debian release as the build stage, so the binary finds the glibc it was linked against.
FROM debian:bookworm-slim AS init
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="tokex-init" \
      org.opencontainers.image.description="Installs and proves the kernel redirect of tokex's transparent mode (tokex init) in a pod's network namespace" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/kubernetes.md" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# Unpinned on purpose: Debian stable replaces a package's version in place (security and point
# releases) and drops the old one from the mirror, so a pin would stop building at the next
# update. Stable takes only fixes, and `tokex init` proves at every pod start that the installed
# tools redirect.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /tokex /usr/local/bin/tokex
ENTRYPOINT ["tokex"]
CMD ["init", "--config", "/etc/tokex/tokex.yaml"]

FROM gcr.io/distroless/cc-debian12:nonroot AS sidecar
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="tokex" \
      org.opencontainers.image.description="Sidecar proxy that performs OAuth 2.0 Token Exchange (RFC 8693) on outbound calls" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/kubernetes.md" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /tokex /usr/local/bin/tokex
# 65532 is distroless' `nonroot`; numeric so the kubelet can check runAsNonRoot. It is also
# transparent.proxy_uid's default: the redirect exempts this uid's own connections.
USER 65532:65532
# 15001: egress listener (keep it on 127.0.0.1 in a pod); 15000: admin (/healthz /readyz /metrics).
EXPOSE 15001 15000
ENTRYPOINT ["tokex"]
CMD ["run", "--config", "/etc/tokex/tokex.yaml"]
