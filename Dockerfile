# syntax=docker/dockerfile:1
# suivi's container image: built with the Rust image, run on Debian slim as an unprivileged user.
# protoc is vendored by build.rs (crates.io), so the build needs no system package. Build from the
# repository root:  docker build -t suivi .  (deploy/README.md says how to run it).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /build
# benches/ and tests/ are copied too: Cargo.toml declares targets there, and cargo refuses a
# manifest whose targets are missing, even to build only the binary.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin suivi \
    && install -D -m 0755 target/release/suivi /out/suivi

FROM debian:${DEBIAN_RELEASE}-slim
# The system's trusted roots: PostgreSQL's sslmode=verify-ca or verify-full without sslrootcert
# checks the server's certificate against them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can check it (deploy/kubernetes uses it).
RUN groupadd --system --gid 10001 suivi \
    && useradd --system --uid 10001 --gid suivi --home-dir /var/lib/suivi --shell /usr/sbin/nologin suivi \
    && install -d -o suivi -g suivi -m 0750 /var/lib/suivi \
    && install -d -o suivi -g suivi -m 0755 /etc/suivi
COPY --from=build /out/suivi /usr/local/bin/suivi
# Listen on every interface inside the container; keep the data in the volume. Any other setting
# comes the same way (SUIVI_<KEY>, see README.md).
# Credentials: suivi refuses to serve on 0.0.0.0 without a credentials file, and none is in the
# image. Mount one at /etc/suivi/credentials.toml (made with `suivi credentials --file
# credentials.toml add …`; it holds token hashes only), e.g.
#   docker run -v "$PWD/credentials.toml:/etc/suivi/credentials.toml:ro" -e SUIVI_METRICS_TOKEN=… suivi
# (mount the directory rather than the file to have suivi see `add` and `revoke` without a restart).
# TLS: mount a certificate and key and set SUIVI_TLS_CERT and SUIVI_TLS_KEY (deploy/README.md).
# GLIBC_TUNABLES: glibc's malloc asks for transparent huge pages for the heap (where the host
# gives them on request, /sys/kernel/mm/transparent_hugepage/enabled = madvise or always): the
# state's tables are gigabytes read at random, and with 4 KiB pages nearly every lookup also
# missed the TLB. Replay was 1.3x faster with it (BENCHMARKS.md, "Checkpoints, restart and
# replay").
ENV SUIVI_GRPC_ADDR=0.0.0.0:50051 \
    SUIVI_HTTP_ADDR=0.0.0.0:8080 \
    SUIVI_DATA_DIR=/var/lib/suivi \
    SUIVI_CREDENTIALS=/etc/suivi/credentials.toml \
    SUIVI_LOG_FORMAT=json \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1
USER 10001:10001
VOLUME ["/var/lib/suivi"]
# gRPC (ingest and queries), HTTP (JSON API, /metrics, /healthz, /readyz).
EXPOSE 50051 8080
# suivi stops gracefully on SIGTERM (docker stop), within shutdown_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/suivi"]
CMD ["serve"]
