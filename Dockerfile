# The dnspolicy image: one static-enough binary on a distroless base, run as
# non-root (65532) with a read-only root filesystem (see manifests/operator.yaml).
# Not built in CI here: this machine has no container runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dnspolicy-operator --bin dnspolicy-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dnspolicy-operator /usr/local/bin/dnspolicy-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dnspolicy-operator"]
CMD ["run"]
