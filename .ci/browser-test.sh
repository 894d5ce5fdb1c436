#!/usr/bin/env bash
# Browser test of `tlens report`: generate reports with the debug binary (the embedded model, and the tiny GPT-2 for a
# model with MLPs), load each in real headless Chromium (Debian's package), and check that
#   - the page's script ran to the end and drew every chart it announces (data-charts-rendered == data-expected-charts,
#     and that many elements marked data-rendered="1"), with canvas heatmaps and SVG charts present;
#   - the browser logged nothing on the console but the report's own closing line (which also proves that console
#     messages are captured), so no error, warning or failed request went by;
#   - no script error was recorded on the page (data-error).
# Needs root for apt-get when chromium is missing. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --quiet --bin tlens
tlens() { cargo run --quiet --bin tlens -- "$@"; }

fail=0
check_report() {
    local name=$1
    shift
    local html="$work/$name.html" profile
    echo "== $name: tlens report $*"
    tlens report --out "$html" "$@" | tee "$work/$name.stdout"
    grep -aq "^wrote $html" "$work/$name.stdout"
    profile=$(mktemp -d)
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" \
        --enable-logging=stderr --v=0 --dump-dom "file://$html" >"$work/$name.dom" 2>"$work/$name.stderr" || {
        echo "FAIL $name: chromium exited with an error"
        cat "$work/$name.stderr"
        fail=1
        return
    }
    rm -rf "$profile"
    local expected rendered marked console
    expected=$(grep -ao 'data-expected-charts="[0-9]*"' "$work/$name.dom" | grep -ao '[0-9]*' || true)
    rendered=$(grep -ao 'data-charts-rendered="[0-9]*"' "$work/$name.dom" | grep -ao '[0-9]*' || true)
    marked=$(grep -ao 'data-rendered="1"' "$work/$name.dom" | wc -l)
    console=$(grep 'CONSOLE' "$work/$name.stderr" || true)
    echo "   charts: expected ${expected:-?}, the script says ${rendered:-?}, marked rendered $marked"
    echo "   console: ${console:-<nothing>}"
    local ok=1
    if [[ -z "$expected" || "$expected" == 0 || "$rendered" != "$expected" || "$marked" != "$expected" ]]; then
        echo "FAIL $name: not every chart was drawn"
        ok=0
    fi
    if ! grep -aq '<canvas' "$work/$name.dom" || ! grep -aq '<svg' "$work/$name.dom"; then
        echo "FAIL $name: no canvas heatmap or no SVG chart in the page"
        ok=0
    fi
    for chart in scores lens dla-heads dla-layers attention; do
        if ! grep -aq "data-chart=\"$chart\"[^>]*data-rendered=\"1\"" "$work/$name.dom"; then
            echo "FAIL $name: chart $chart is missing or empty"
            ok=0
        fi
    done
    if grep -aq 'data-error=' "$work/$name.dom"; then
        echo "FAIL $name: the page recorded a script error"
        ok=0
    fi
    if ! grep -aq 'tlens report: rendered' <<<"$console"; then
        echo "FAIL $name: the report's console line is missing (script did not finish, or console not captured)"
        ok=0
    fi
    if grep -v 'tlens report: rendered' <<<"$console" | grep -aq .; then
        echo "FAIL $name: the console shows other messages (errors or warnings)"
        ok=0
    fi
    if [[ $ok == 1 ]]; then echo "ok   $name"; else fail=1; fi
}

check_report embedded
check_report gpt2-tiny --model tests/models/gpt2-tiny
exit $fail
