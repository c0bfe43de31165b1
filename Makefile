# The recipes CI runs (.ci/run calls `make test`).
.PHONY: quickstart test lint unit

# Start a platform on a fresh data dir, deploy and invoke examples/, keep serving.
quickstart:
	cargo run --release --locked -p kl -- quickstart

# Everything CI checks: formatting, lints, unit, component and end-to-end tests.
test: lint
	cargo test --workspace --locked

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Only the fast tests (no real servers).
unit:
	cargo test --workspace --locked --lib
