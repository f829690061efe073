# The dnspolicy image: one static-enough binary on a distroless base, run as
# non-root (65532) with a read-only root filesystem (see manifests/operator.yaml).
#
# The e2e builds the same image without Docker (e2e/scripts/build-deps.sh
# dnspolicy-image, with umoci) by reading this file's final stage: its
# COPY --from=build of cargo-built binaries, USER, ENTRYPOINT and CMD are the
# one list of what the image holds, plus the libraries `ldd` says the binary
# needs (the distroless cc base's share). Any other instruction there is an
# error in that script until it is taught the same thing.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p dnspolicy-operator --bin dnspolicy-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dnspolicy-operator /usr/local/bin/dnspolicy-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dnspolicy-operator"]
CMD ["run"]
