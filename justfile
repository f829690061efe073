# dnspolicy: `just demo` shows it work on a local real cluster; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TERM_COLOR := "never"

# List the recipes.
default:
    @just --list

# Debian packages and the cached control plane, CoreDNS and resolver binaries (built once, by version).
deps:
    bash e2e/scripts/deps.sh
    bash e2e/scripts/build-deps.sh

# The main job: a local real cluster, the seed's polluted lookup, the operator, a policy, the lookup again.
demo: deps
    cargo build -q -p dnspolicy-operator -p dnspolicy -p dnspolicy-e2e
    cargo run -q -p dnspolicy-e2e --bin e2e-demo

# Every test: unit, property, CLI and end to end on the real components.
# The local cluster is started by the first e2e test and left up for the next; `just down` stops it.
test: deps
    just crd-check
    cargo build -p dnspolicy-operator --features failpoints -p dnspolicy
    cargo test --workspace --no-fail-fast -- --test-threads=1

# Only the end-to-end suites.
e2e: deps
    cargo build -p dnspolicy-operator --features failpoints -p dnspolicy
    cargo test -p dnspolicy-e2e --no-fail-fast -- --test-threads=1

# Start the local cluster (prints the KUBECONFIG line).
up: deps
    cargo run -q -p dnspolicy-e2e --bin e2e-cluster -- up

# Stop it; leaves no process and no port behind.
down:
    cargo run -q -p dnspolicy-e2e --bin e2e-cluster -- down

# Benchmarks against docs/design.md section 11's targets, never part of `just test` (`just bench --quick`: a short run).
bench *ARGS: deps
    cargo run -q --release -p dnspolicy-e2e --bin e2e-bench -- {{ARGS}}

# Regenerate manifests/crd.yaml from the Rust types.
crd:
    cargo run -q -p dnspolicy -- crd > manifests/crd.yaml

# Fail when manifests/crd.yaml differs from what `dnspolicy crd` prints.
crd-check:
    cargo run -q -p dnspolicy -- crd | diff -u manifests/crd.yaml - || { echo "manifests/crd.yaml is stale: run just crd" >&2; exit 1; }

# Pin the release's image by digest in release/ (IMAGE@sha256:...; a tag is refused).
release-overlay IMAGE:
    cargo run -q -p dnspolicy -- release-overlay '{{IMAGE}}' > release/kustomization.yaml.new || { rm -f release/kustomization.yaml.new; exit 2; }
    mv release/kustomization.yaml.new release/kustomization.yaml
    cargo run -q -p dnspolicy -- release-overlay --check release/kustomization.yaml

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
