# Two commands on a fresh Debian/Ubuntu machine:
#   make run CONFIG=sealpost.toml   - install what is missing, build, run the proxy
#   make test                       - install what is missing, run the whole test suite
#   make test-interop               - also build sq 1.x once and test the shared key store
CONFIG ?= sealpost.toml

.PHONY: run test test-interop check build deps

run:
	scripts/deps.sh build
	cargo build --release --locked
	./target/release/sealpost run --config $(CONFIG)

test:
	scripts/deps.sh test
	scripts/check-tools.sh test
	cargo test --locked

# The tests marked #[ignore = "interop: ..."] need sq 1.x, which takes minutes to build.
test-interop:
	scripts/deps.sh interop
	scripts/check-tools.sh interop
	cargo test --locked --test key_discovery -- --ignored interop_

check:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

build:
	scripts/deps.sh build
	cargo build --release --locked
