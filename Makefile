# Two commands on a fresh Debian/Ubuntu machine:
#   make run CONFIG=sealpost.toml   - install what is missing, build, run the proxy
#   make test                       - install what is missing, run the whole test suite
CONFIG ?= sealpost.toml

.PHONY: run test check build deps

run:
	scripts/deps.sh build
	cargo build --release --locked
	./target/release/sealpost run --config $(CONFIG)

test:
	scripts/deps.sh test
	cargo test --locked

check:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

build:
	scripts/deps.sh build
	cargo build --release --locked
