#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each one for a while, one at a time. Run it from anywhere:
#   bash scripts/fuzz.sh                       # every target, 20 s each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh      # a longer hunt
#   FUZZ_TARGETS="stream_openai request_chat" bash scripts/fuzz.sh
#
# Each target starts from the committed seeds (fuzz/seeds/<target>/, realistic provider payloads) plus the
# corpus earlier runs grew on this machine (fuzz/corpus/<target>/, not committed). A crash, a failed
# property, a timeout (one input taking longer than FUZZ_TIMEOUT seconds) or an out-of-memory input fails
# the run: the input is saved under fuzz/artifacts/<target>/, the script goes on with the other targets,
# prints a summary (executions per target) and exits non-zero. Replay a saved input with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -s none -a <target> fuzz/artifacts/<target>/<file>
#
# Works on the stable toolchain: cargo-fuzz passes a few unstable compiler flags, which RUSTC_BOOTSTRAP=1
# allows. No sanitizer by default (FUZZ_SANITIZER=none): the fuzzed crate forbids unsafe code, so
# AddressSanitizer would only slow the search; debug assertions are on, so an integer overflow is a finding.
#
# Environment: FUZZ_SECONDS (default 20) per target; FUZZ_TARGETS (default: all); FUZZ_MAX_LEN (default
# 16384 bytes per input); FUZZ_TIMEOUT (default 10 s per input); FUZZ_RSS_MB (default 2048);
# FUZZ_SANITIZER (default none).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ_DIR=$ROOT/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-20}
MAX_LEN=${FUZZ_MAX_LEN:-16384}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_MB:-2048}
SANITIZER=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

case $SECONDS_EACH in '' | *[!0-9]*)
    echo "scripts/fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, got '$SECONDS_EACH'" >&2
    exit 2
    ;;
esac

command -v cargo >/dev/null 2>&1 || {
    echo "scripts/fuzz.sh: cargo is required (install the Rust toolchain)" >&2
    exit 127
}
command -v c++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || {
    echo "scripts/fuzz.sh: a C++ compiler is required to build libFuzzer (on Debian: apt-get install g++)" >&2
    exit 127
}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

started=$SECONDS
all_targets=$(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
targets=${FUZZ_TARGETS:-$all_targets}
for t in $targets; do
    grep -qx "$t" <<<"$all_targets" || {
        echo "scripts/fuzz.sh: no fuzz target '$t'; the targets are: $(echo $all_targets)" >&2
        exit 2
    }
done

echo "==> building $(wc -w <<<"$targets") fuzz targets (sanitizer: $SANITIZER, debug assertions on)"
build_started=$SECONDS
# One build for all targets; `cargo fuzz build <target>` per target would re-check the crate each time.
cargo fuzz build --fuzz-dir "$FUZZ_DIR" -s "$SANITIZER" --debug-assertions
echo "    (build: $((SECONDS - build_started))s)"

# The dictionary each target's mutations draw tokens from.
dict_for() {
    case $1 in
    request_*) echo "$FUZZ_DIR/dict/request.dict" ;;
    response_* | error_*) echo "$FUZZ_DIR/dict/response.dict" ;;
    *_structured) echo "" ;; # their input is a list of choices, not text
    stream_*) echo "$FUZZ_DIR/dict/sse.dict" ;;
    *) echo "" ;;
    esac
}

logs=$FUZZ_DIR/logs
mkdir -p "$logs"
failed=()
summary=()
for t in $targets; do
    corpus=$FUZZ_DIR/corpus/$t
    seeds=$FUZZ_DIR/seeds/$t
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$t"
    [ -d "$seeds" ] || {
        echo "scripts/fuzz.sh: $t has no seeds in fuzz/seeds/$t" >&2
        exit 1
    }
    dict=$(dict_for "$t")
    args=(-max_total_time="$SECONDS_EACH" -max_len="$MAX_LEN" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" -print_final_stats=1)
    [ -n "$dict" ] && args+=(-dict="$dict")
    echo "==> $t for ${SECONDS_EACH}s"
    log=$logs/$t.log
    t_started=$SECONDS
    # The first corpus directory receives what the run discovers; the seeds are only read.
    if cargo fuzz run --fuzz-dir "$FUZZ_DIR" -s "$SANITIZER" --debug-assertions "$t" "$corpus" "$seeds" -- "${args[@]}" >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed+=("$t")
        echo "---- last lines of $log ----"
        tail -n 40 "$log"
        echo "----"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    units=$(find "$corpus" -type f | wc -l)
    summary+=("$(printf '%-30s %6ss %12s execs %6s corpus  %s' "$t" $((SECONDS - t_started)) "${execs:-?}" "$units" "$result")")
done

echo
echo "==> summary (${SECONDS_EACH}s per target, $((SECONDS - started))s in all; logs in fuzz/logs/)"
printf '    %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "scripts/fuzz.sh: ${#failed[@]} target(s) found a problem: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "scripts/fuzz.sh: no findings"
