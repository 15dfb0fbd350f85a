# syntax=docker/dockerfile:1
#
# Conduit's container image: `docker build -t conduit .` (or `podman build`).
#
# Two stages:
# - build: Debian bookworm's Rust image compiles the release binary with
#   `--locked` (Cargo.lock as committed) and SQLX_OFFLINE=true (the queries are
#   checked against the committed .sqlx/ data: no database at build time). The
#   dependencies are compiled first, in a layer of their own that only a change
#   to Cargo.toml, Cargo.lock or build.rs rebuilds: the same layer trick as
#   cargo-chef, without fetching and compiling a tool for it.
# - runtime: distroless `cc` (Debian 12): glibc, libgcc, CA certificates, tzdata,
#   /etc/passwd with `nonroot` (65532); no shell, no package manager, no build
#   tools. The binary is its own health check (`conduit healthcheck`): the image
#   has no curl.
#
# The server needs DATABASE_URL and JWT_SECRET (its embedded PostgreSQL needs
# PostgreSQL's binaries, which the image does not have). MIGRATE_ON_START (true
# unless set): each server applies the migrations its database lacks at start,
# under PostgreSQL's advisory lock; with several replicas, set it to false and run
# `conduit migrate` once per release (a Kubernetes Job) before the servers, which
# then only check that the database has every migration they know and otherwise
# exit 1 naming `conduit migrate`. docs/deployment.md has the whole procedure.
#
# The base images are named by tag, not digest: a digest cannot be resolved or
# checked from the machines this file was written on (no registry access). Pin
# them where you build (`docker buildx imagetools inspect <image>` prints the
# digest; `FROM <image>@sha256:...`) and let a bot such as Renovate move the pin.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
WORKDIR /src

# The dependencies, compiled against an empty crate of the same manifest.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin conduit \
    && rm -rf src target/release/conduit target/release/deps/conduit-* target/release/.fingerprint/conduit-*

# The crate itself. The sources' modification times come from the build context
# and may be older than the empty crate's build: its fingerprints are removed
# above, so cargo rebuilds the crate, and the check below refuses the empty one.
COPY .sqlx ./.sqlx
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin conduit \
    && ./target/release/conduit --version | grep -q '^conduit ' \
    && ./target/release/conduit help healthcheck | grep -q '/health/ready'

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/conduit /usr/local/bin/conduit
# Distroless's `nonroot`, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 65532:65532
WORKDIR /home/nonroot
ENV BIND_ADDR=0.0.0.0:8080 \
    METRICS_ADDR=0.0.0.0:9464 \
    LOG_FORMAT=json
# 8080: the API and its probes (/health/live, /health/ready); 9464: /metrics.
EXPOSE 8080 9464
# Docker and Podman (with the docker format) run this; Kubernetes ignores it and
# uses the Deployment's probes on the same endpoints.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/conduit", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/conduit"]
CMD ["serve"]
