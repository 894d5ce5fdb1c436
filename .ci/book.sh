#!/usr/bin/env bash
# Builds the user's manual (book/) with mdBook into book/book. Installs the pinned mdBook first if it is missing
# (HTML renderer and search only: no file watcher, no web server, the quickest build that renders the book).
# The book's Rust examples are tested by `cargo test --doc` (src/book.rs includes every chapter as doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
MDBOOK_VERSION=0.5.4
start=$(date +%s)
if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
    echo "== installing mdbook $MDBOOK_VERSION"
    cargo install mdbook --version "=$MDBOOK_VERSION" --locked --no-default-features --features search
    echo "== installed mdbook in $(( $(date +%s) - start )) s"
fi
build_start=$(date +%s)
mdbook build book
echo "== built the book into book/book in $(( $(date +%s) - build_start )) s (total $(( $(date +%s) - start )) s)"
