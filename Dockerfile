# Multi-stage build of the operator image: a static-enough release binary (no emulators:
# --no-default-features) on distroless, non-root, with CA certificates for GitLab's TLS.
# Not built in this project's CI (no container engine there); kept minimal on purpose.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY deploy/examples ./deploy/examples
COPY examples ./examples
COPY tests ./tests
RUN cargo build --release --locked --no-default-features --bin runner-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/runner-operator /usr/local/bin/runner-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/runner-operator"]
CMD ["run"]
