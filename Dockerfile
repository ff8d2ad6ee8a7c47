# syntax=docker/dockerfile:1
# tokex sidecar image: built with the same `cargo build --locked --release` the tests use,
# run as a non-root user on a distroless base (CA certificates included, no shell).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --locked --release \
 && install -m 0755 target/release/tokex /tokex

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tokex" \
      org.opencontainers.image.description="Sidecar proxy that performs OAuth 2.0 Token Exchange (RFC 8693) on outbound calls" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /tokex /usr/local/bin/tokex
USER nonroot:nonroot
# 15001: egress listener (loopback in a pod); 15000: admin (/healthz /readyz /metrics).
EXPOSE 15001 15000
ENTRYPOINT ["tokex"]
CMD ["run", "--config", "/etc/tokex/tokex.yaml"]
