# syntax=docker/dockerfile:1
#
# rtc-broker image: a Rust builder stage and a small Debian runtime with
# ffmpeg/ffprobe (the recording merger), running as a non-root user.
#
#   docker build -t rtc-broker:latest .
#   docker run --rm -p 8080:8080 rtc-broker:latest
#
# The build context is limited by .dockerignore to what cargo needs:
# Cargo.toml, Cargo.lock, src/, config/ (default.toml is compiled in),
# vendor/ (the patched actix-http of [patch.crates-io]) and bench/
# (Cargo.toml declares [[example]] targets there, and cargo reads every
# declared target path when it parses the manifest).

# ---- builder ---------------------------------------------------------------
# rust-version = 1.88 in Cargo.toml; rust:1-bookworm follows the newest stable
# 1.x and is built on the same Debian release as the runtime stage below.
FROM rust:1-bookworm AS builder
WORKDIR /build

COPY Cargo.toml Cargo.lock ./
COPY vendor/ vendor/
COPY bench/ bench/
COPY config/ config/
COPY src/ src/

# BuildKit cache mounts keep the crates.io downloads and the target folder
# between builds (dependencies are not rebuilt when only src/ changed). The
# target folder is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin rtc-broker \
    && install -m 0755 target/release/rtc-broker /usr/local/bin/rtc-broker

# ---- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ffmpeg (with ffprobe) merges recordings; curl is only for HEALTHCHECK;
# ca-certificates for any TLS the broker may be pointed at.
# DL3008 (pin apt versions) is ignored: bookworm's security updates replace
# old package versions in the archive, so pinned versions would break the
# build; the Debian release itself is pinned by the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# Non-root user; Kubernetes' securityContext (k8s/deployment.yaml) uses the
# same uid/gid. /data is where the recordings volume is mounted: a named
# Docker volume mounted there starts as a copy of these folders (owned by rtc).
RUN groupadd --gid 10001 rtc \
    && useradd --uid 10001 --gid rtc --home-dir /app --no-create-home \
       --no-log-init --shell /usr/sbin/nologin rtc \
    && mkdir -p /app /data/chunks /data/recordings \
    && chown -R rtc:rtc /data

WORKDIR /app
# config/<RUN_ENV>.toml is read at start-up from ./config (BROKER_CONFIG_DIR).
COPY --from=builder /build/config/ /app/config/
COPY --from=builder /usr/local/bin/rtc-broker /usr/local/bin/rtc-broker

ENV HOST=0.0.0.0 \
    PORT=8080 \
    TEMP_DIR=/data/chunks \
    STORAGE_LOCAL_PATH=/data/recordings

USER 10001:10001
EXPOSE 8080

# `|| exit 1`: Docker reserves exit codes other than 0 and 1 (curl -f exits 22).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:8080/health/live || exit 1"]

# SIGTERM: stop accepting, close WebSockets with 1001, drain for up to
# server.shutdown_timeout_seconds (30 s). Give the container more than that
# (docker stop -t 45, compose stop_grace_period, k8s grace period 45 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["rtc-broker"]
CMD ["serve"]
