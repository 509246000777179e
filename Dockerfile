# The operator image for users with a container engine. Same content as deploy/image/build.sh,
# which CI builds without one: a static release binary without the emulators
# (--no-default-features), CA certificates, the non-root user 65532, nothing else.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Only what the production binary is built from: no tests, examples or test doubles. Cargo
# reads every workspace member's manifest, so the doubles' manifests come with empty sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY crates/gitlab-emulator/Cargo.toml crates/gitlab-emulator/
COPY crates/kube-local/Cargo.toml crates/kube-local/
RUN for c in gitlab-emulator kube-local; do mkdir -p crates/$c/src && touch crates/$c/src/lib.rs crates/$c/src/main.rs; done
# `version` shows them: docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD)
#   --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
ARG GIT_COMMIT=unknown
ARG SOURCE_DATE_EPOCH
RUN RUNNER_OPERATOR_GIT_COMMIT="$GIT_COMMIT" RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
      --no-default-features --bin runner-operator --target x86_64-unknown-linux-gnu \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/usr/local/bin /rootfs/tmp /rootfs/home/nonroot \
 && chmod 1777 /rootfs/tmp && chmod 0700 /rootfs/home/nonroot \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && cp target/x86_64-unknown-linux-gnu/release/runner-operator /rootfs/usr/local/bin/

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/runner-operator"]
CMD ["run"]
