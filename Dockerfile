# syntax=docker/dockerfile:1
# Plinth's image: a release build, then a slim runtime with the one binary.
#   docker build -t plinth:0.1.0 .
#   docker run -p 8080:8080 plinth:0.1.0 serve --listen 0.0.0.0:8080
# The Helm chart (deploy/helm/plinth) runs it with its config from a ConfigMap.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The registry and target directory are build caches: a source change rebuilds only Plinth.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p plinth \
 && cp target/release/plinth /usr/local/bin/plinth

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 plinth \
 && useradd --uid 10001 --gid plinth --home-dir /var/lib/plinth --create-home plinth
COPY --from=build /usr/local/bin/plinth /usr/local/bin/plinth
COPY config/plinth.example.toml /etc/plinth/plinth.example.toml
USER 10001:10001
WORKDIR /var/lib/plinth
ENV PLINTH_DATA_DIR=/var/lib/plinth \
    PLINTH_LISTEN=0.0.0.0:8080
EXPOSE 8080
# tini forwards SIGTERM to Plinth, which then drains and flushes its prediction log.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/plinth"]
CMD ["serve"]
