# The image that charts/portcullis and deploy/ run (ghcr.io/portcullis/portcullis:<version>).
#   docker build -t ghcr.io/portcullis/portcullis:0.1.0 .
# Build stage: the toolchain the CI uses; jemalloc's C code needs the image's gcc and make.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# No debug info and no symbols in the shipped binary (the release profile keeps line
# tables for profiling on a workstation).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
    && cp target/release/portcullis /portcullis

# Runtime: glibc and libgcc only, no shell, no package manager; user 65532 (nonroot), the
# user the chart and the manifests run as, with a read-only root filesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /portcullis /usr/local/bin/portcullis
USER 65532:65532
# gRPC ext_authz and health; HTTP health, metrics and ext_authz; the admission webhook.
EXPOSE 9191 8181 8443
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/config"]
