# The routing tier's image: every binary of the workspace (gorouter, routing-api, tcp-router,
# route-emitter, locket, rtr, routing-tier, loadgen, route-service, uaa-stand-in) on Debian
# bookworm-slim, running as the unprivileged user `routing` (uid/gid 10001).
#
#   docker build -t routing-tier .                      # from source (the default last stage)
#   docker build --target runtime-prebuilt --build-arg PREBUILT_DIR=compose/prebuilt \
#     -t routing-tier:prebuilt .                        # binaries built elsewhere
#
# Stages, in an order that also suits the classic builder (which builds every stage before its
# target; BuildKit builds only those the target needs):
#   runtime-base      base image, CA certificates, the user, compose/bin's helpers
#   runtime-prebuilt  runtime-base + the binaries in PREBUILT_DIR (a directory of the context;
#                     scripts/compose-test builds this from the binaries it already has)
#   skeleton, build   the release binaries, from source; dependencies in a layer of their own
#   runtime           runtime-base + the binaries from `build` (default)
# No `# syntax=` line and no RUN --mount: both builders, and no frontend image to pull.

ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-slim-bookworm

FROM ${BASE_IMAGE} AS runtime-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 routing \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/routing \
      --shell /usr/sbin/nologin routing \
 && install -d -o 10001 -g 10001 -m 0750 /certs /var/lib/routing
# healthcheck (HTTP/TCP probes for HEALTHCHECK without curl) and render-config (BOSH-style
# rendering of a config template at container start: PEM files inlined, host names resolved).
COPY compose/bin/ /usr/local/bin/
WORKDIR /var/lib/routing
USER 10001:10001
CMD ["routing-tier", "--help"]

FROM runtime-base AS runtime-prebuilt
# compose/prebuilt holds only a .gitignore unless binaries were put there.
ARG PREBUILT_DIR=compose/prebuilt
USER root
COPY ${PREBUILT_DIR}/ /usr/local/bin/
RUN rm -f /usr/local/bin/.gitignore && chmod 0755 /usr/local/bin/*
USER 10001:10001

# Every manifest and the lock file as they are, every Rust file replaced by `fn main() {}`: the
# dependency layer below is rebuilt only when a manifest, Cargo.lock or the set of files changes.
FROM ${RUST_IMAGE} AS skeleton
WORKDIR /src
COPY . .
RUN find . -type f ! -name '*.rs' ! -name Cargo.toml ! -name Cargo.lock -delete \
 && find . -type f -name '*.rs' | while read -r f; do echo 'fn main() {}' >"$f"; done

FROM ${RUST_IMAGE} AS build
ARG BINARIES="gorouter routing-api tcp-router route-emitter locket rtr routing-tier loadgen route-service uaa-stand-in"
ENV CARGO_TERM_COLOR=never
WORKDIR /src
COPY --from=skeleton /src/ ./
RUN cargo build --release --locked --workspace --bins
COPY . .
# Newer than the skeleton's files, so cargo rebuilds the workspace's crates for real (and only
# them: target/ holds build scripts' generated sources, left alone).
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --workspace --bins \
 && mkdir /out \
 && for b in ${BINARIES}; do cp "target/release/$b" /out/ || exit 1; done

FROM runtime-base AS runtime
COPY --from=build /out/ /usr/local/bin/
