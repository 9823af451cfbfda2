#!/usr/bin/env bash
# Runs the fuzz targets: first the committed corpus and every input that once
# crashed a target (regressions/) as ordinary tests, then each target under
# libFuzzer for FUZZ_SECONDS (default 20) from the committed corpus.
#
# Usage: csi-driver/fuzz/run.sh [TARGET...]   (default: every target)
#
# Needs a nightly toolchain and cargo-fuzz (e2e/tools/install.sh cargo-fuzz).
# Builds go to $ROAM_CACHE/fuzz-target, kept across clones. New inputs found
# go to a scratch directory, not into the committed corpus; a crash leaves
# its input in artifacts/TARGET/ and fails the run: add it to
# regressions/TARGET/, fix the cause, and the replay test keeps it fixed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
seconds=${FUZZ_SECONDS:-20}
export CARGO_TARGET_DIR=${ROAM_CACHE:-$HOME/.cache/roam}/fuzz-target

die() {
	echo "fuzz: $*" >&2
	exit 1
}

command -v cargo-fuzz >/dev/null || die "cargo-fuzz is not installed: run e2e/tools/install.sh cargo-fuzz"
rustup run nightly rustc --version >/dev/null 2>&1 || die "no nightly toolchain (rustup toolchain install nightly)"

targets=("$@")
((${#targets[@]})) || targets=(peer_message journal_replay storage_request)

cargo test --quiet

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
	mkdir -p "$scratch/$t"
	echo "fuzz: $t for ${seconds}s"
	# -s none: the targets are safe Rust; what they find is panics, hangs
	# and runaway memory, which need no sanitizer. -a keeps debug assertions.
	if ! cargo +nightly fuzz run -s none -a "$t" "$scratch/$t" "corpus/$t" -- \
		-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		>"$scratch/$t.log" 2>&1; then
		tail -n 40 "$scratch/$t.log" >&2
		die "$t failed; its input is in $here/artifacts/$t/"
	fi
	grep -E '^stat::number_of_executed_units|^Done' "$scratch/$t.log" | sed "s/^/fuzz: $t: /"
done
echo "fuzz: ${#targets[@]} target(s), no crash"
