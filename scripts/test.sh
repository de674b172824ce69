#!/usr/bin/env bash
# Switchyard's test command: formatting, lints, the Rust tests, then the black-box SDK tests (official Python
# SDKs against the real binary and its mock upstreams). Run it from anywhere: `bash scripts/test.sh`.
#
# Steps, each stopping the run on failure:
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   2b. promtool check rules / test rules on deploy/prometheus (the shipped alert rules)
#   3. cargo nextest run --workspace   (cargo test --workspace when cargo-nextest is not installed)
#   3b. the fuzz targets in fuzz/, formatted and run briefly: bash scripts/fuzz.sh (FUZZ_SECONDS, default 10 here)
#   4. cargo build -p switchyard
#   5. a Python venv at .venv with tests/sdk/requirements.txt (reused while the requirements are unchanged)
#   6. pytest -q tests/sdk             (SWITCHYARD_BIN points at the binary built in step 4); this includes the
#      web UI's browser test (tests/sdk/test_web_ui.py: headless Chromium, Debian's chromium and
#      chromium-driver, which .ci/run installs), whose screenshots of every page land in target/ui-screenshots/
#
# Environment: SWITCHYARD_SKIP_RUST=1 skips steps 1-3b (for iterating on the SDK tests); SWITCHYARD_SKIP_FUZZ=1
# skips step 3b; SWITCHYARD_SKIP_POSTGRES=1 skips the switchyard-store tests that need PostgreSQL's server
# binaries (/usr/lib/postgresql/*/bin, Debian's `postgresql` package, which .ci/run installs);
# SWITCHYARD_SKIP_PROMETHEUS=1 skips step 2b and the test that starts Debian's `prometheus` (which .ci/run
# installs, with promtool);
# SWITCHYARD_SKIP_BROWSER=1 skips the browser test (for a machine without chromium and chromium-driver);
# PYTEST_ADDOPTS passes extra options to pytest (e.g. "-k fallback -x").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

started=$SECONDS
current=""
step() {
    current=$1
    step_started=$SECONDS
    printf '\n==> %s\n' "$current"
}
done_step() { printf '    (%s: %ss)\n' "$current" $((SECONDS - step_started)); }
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '\nscripts/test.sh: FAILED at step "%s" (exit %s) after %ss\n' "$current" "$rc" $((SECONDS - started)) >&2
    fi
}
trap on_exit EXIT

need() {
    command -v "$1" >/dev/null 2>&1 || {
        printf 'scripts/test.sh: %s is required but not installed%s\n' "$1" "${2:+ ($2)}" >&2
        exit 127
    }
}
need cargo "install the Rust toolchain"
need python3 "install CPython 3.10 or newer"
need curl "the SDK tests drive the gateway with curl too"

if [ "${SWITCHYARD_SKIP_RUST:-0}" != 1 ]; then
    step "cargo fmt --all -- --check"
    cargo fmt --all -- --check
    done_step

    step "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
    done_step

    if [ "${SWITCHYARD_SKIP_PROMETHEUS:-0}" != 1 ]; then
        step "promtool check rules / test rules (deploy/prometheus)"
        need promtool "Debian's prometheus package; or set SWITCHYARD_SKIP_PROMETHEUS=1"
        promtool check rules deploy/prometheus/alerts.yml
        (cd deploy/prometheus && promtool test rules alerts_test.yml)
        done_step
    fi

    if cargo nextest --version >/dev/null 2>&1; then
        step "cargo nextest run --workspace"
        cargo nextest run --workspace --no-fail-fast
    else
        step "cargo test --workspace (cargo-nextest is not installed)"
        cargo test --workspace --no-fail-fast
    fi
    done_step

    if [ "${SWITCHYARD_SKIP_FUZZ:-0}" != 1 ]; then
        step "fuzz targets (bash scripts/fuzz.sh, ${FUZZ_SECONDS:-10}s each)"
        cargo fmt --manifest-path fuzz/Cargo.toml -- --check
        FUZZ_SECONDS=${FUZZ_SECONDS:-10} bash scripts/fuzz.sh
        done_step
    fi
fi

step "cargo build -p switchyard"
cargo build -p switchyard
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
case $target_dir in /*) ;; *) target_dir=$ROOT/$target_dir ;; esac
export SWITCHYARD_BIN=$target_dir/debug/switchyard
[ -x "$SWITCHYARD_BIN" ] || {
    echo "scripts/test.sh: the build finished but $SWITCHYARD_BIN is missing" >&2
    exit 1
}
done_step

step "Python venv (.venv) with tests/sdk/requirements.txt"
venv=$ROOT/.venv
req=$ROOT/tests/sdk/requirements.txt
stamp=$venv/.switchyard-requirements
want="$(python3 -c 'import sys; print(sys.version)' | head -1) $(cksum <"$req")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import openai, pytest, selenium' 2>/dev/null; then
    echo "    reusing $venv (requirements unchanged)"
else
    rm -rf "$venv"
    python3 -m venv "$venv" || {
        echo "scripts/test.sh: 'python3 -m venv' failed; on Debian install python3-venv" >&2
        exit 1
    }
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    printf '%s' "$want" >"$stamp"
fi
done_step

step "pytest -q tests/sdk"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk
done_step

printf '\nscripts/test.sh: all steps passed in %ss\n' $((SECONDS - started))
