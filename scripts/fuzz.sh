#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted or operator-written input (the cargo-fuzz crate in
# fuzz/): builds every target once, runs each for FUZZ_SECONDS (default 30) from its seeds
# in fuzz/corpus/<target>, fails on any crash, hang, memory blow-up or broken property,
# and prints the executions per target.
#
#   scripts/fuzz.sh                        # every target, as scripts/test.sh runs it
#   FUZZ_SECONDS=600 scripts/fuzz.sh config   # one target, longer
#
# Targets run FUZZ_JOBS at a time (default: one per core). cargo-fuzz needs nightly:
# `cargo +nightly` when rustup has it, else stable with RUSTC_BOOTSTRAP=1
# (FUZZ_TOOLCHAIN=stable forces that path). cargo-fuzz itself is installed into
# target/fuzz-tools on first use. Every run starts from the seeds alone, so its time stays
# bounded (libFuzzer replays a whole corpus before it starts counting); what a run finds
# stays in fuzz/target/corpus/<target> until the next, a failing input goes to
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
cargo_fuzz_version=0.13.2
tools=target/fuzz-tools
triple=x86_64-unknown-linux-gnu

# Longest input per target: a little past the largest meaningful one (the shipped example
# config is 7 KiB, an RSA key 1.7 KiB, the review of a pod with a few containers 4 KiB);
# longer inputs only slow the search down.
declare -A max_len=([bearer]=4096 [token_response]=4096 [config]=12288 [routing]=1024 [credentials]=4096 [admission_review]=16384)
all=(bearer token_response config routing credentials admission_review)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "unknown fuzz target $t (have: ${all[*]})" >&2; exit 1; }
done

toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ]; then
  toolchain=stable
  # grep without -q reads all of rustup's output, so pipefail sees no SIGPIPE.
  if command -v rustup > /dev/null && rustup toolchain list | grep '^nightly' > /dev/null; then toolchain=nightly; fi
fi
case "$toolchain" in
  nightly) cargo=(cargo +nightly) ;;
  stable) cargo=(cargo) && export RUSTC_BOOTSTRAP=1 ;;
  *) echo "FUZZ_TOOLCHAIN must be nightly or stable" >&2; exit 1 ;;
esac

if [ "$("$tools/bin/cargo-fuzz" --version 2> /dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  # --debug: built in a third of the time, and cargo-fuzz only drives cargo.
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --debug --root "$tools"
fi
export PATH="$PWD/$tools/bin:$PATH"

echo "toolchain: $("${cargo[@]}" --version)${RUSTC_BOOTSTRAP:+ with RUSTC_BOOTSTRAP=1}"
# cargo fuzz build has no --locked; this fails instead if fuzz/Cargo.lock is stale.
"${cargo[@]}" fetch --locked --quiet --manifest-path fuzz/Cargo.toml --target "$triple"
# No sanitizer: tokex forbids unsafe code, so what there is to find is panics and broken
# properties, and ASan would double the build and halve the executions. Debug assertions
# (cargo-fuzz's default) make integer overflow a crash.
build_target=()
[ ${#targets[@]} -eq 1 ] && build_target=("${targets[0]}")
"${cargo[@]}" fuzz build --sanitizer none --codegen-units 16 ${build_target[@]+"${build_target[@]}"}

bin=fuzz/target/$triple/release
logs=fuzz/target/logs
mkdir -p "$logs"

# Runs one target; leaves "executions seconds ok|FAILED" in $logs/<target>.result.
fuzz_one() {
  local t=$1 started status=ok execs dict=()
  rm -rf "fuzz/target/corpus/$t"
  mkdir -p "fuzz/target/corpus/$t" "fuzz/artifacts/$t"
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  started=$(date +%s)
  # The first corpus directory receives new inputs, so the committed seeds stay as they are.
  # An empty environment: no input's outcome may depend on the machine's variables
  # (`${NAME}` in a config, SSL_CERT_FILE, which would be read for every config loaded).
  env -i RUST_BACKTRACE=1 "$bin/$t" -max_total_time="$seconds" -max_len="${max_len[$t]}" -rss_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" ${dict[@]+"${dict[@]}"} \
    "fuzz/target/corpus/$t" "fuzz/corpus/$t" > "$logs/$t.log" 2>&1 || status=FAILED
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$logs/$t.log" | tail -n 1)
  echo "${execs:-?} $(($(date +%s) - started)) $status" > "$logs/$t.result"
}

# One target per core at a time: the step's wall time is what CI's budget counts.
jobs=${FUZZ_JOBS:-$(nproc)}
running=0
for t in "${targets[@]}"; do
  rm -f "$logs/$t.result"
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait

printf '\n%-16s %12s %8s  %s\n' target executions time result
failed=()
for t in "${targets[@]}"; do
  read -r execs elapsed status < "$logs/$t.result" || { execs='?' elapsed='?' status=FAILED; }
  printf '%-16s %12s %7ss  %s\n' "$t" "$execs" "$elapsed" "$status"
  [ "$status" = ok ] || failed+=("$t")
done
for t in ${failed[@]+"${failed[@]}"}; do
  echo "--- $t failed; from $logs/$t.log:" >&2
  grep -m 1 -A 12 -E "panicked at|ERROR: libFuzzer" "$logs/$t.log" >&2 || tail -n 20 "$logs/$t.log" >&2
  grep -E "Test unit written to" "$logs/$t.log" >&2 || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}; replay with: env -i $bin/<target> fuzz/artifacts/<target>/<file>" >&2
  exit 1
fi
