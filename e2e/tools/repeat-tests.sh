#!/usr/bin/env bash
# Runs test binaries again and again, to find flaky tests before CI does:
# `make repeat-teardown` runs every frontend and data-plane teardown test
# REPEAT times (default 50) in a row, one test at a time, while LOAD busy
# loops (default: one per core) keep every core loaded, and stops at the
# first failure, naming the run and leaving its output in $OUT.
#
# Usage: e2e/tools/repeat-tests.sh PACKAGE:TEST...   (e.g. roam-engine:frontend_teardown)
# Env:   REPEAT (50), LOAD (nproc; 0 for none), OUT (a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/../.."
repeat=${REPEAT:-50}
load=${LOAD:-$(nproc)}
out=${OUT:-$(mktemp -d /tmp/roam-repeat.XXXXXX)}
mkdir -p "$out"

busy=()
stop_load() { ((${#busy[@]})) && kill "${busy[@]}" 2>/dev/null; busy=(); }
trap stop_load EXIT
for ((i = 0; i < load; i++)); do
	(while :; do :; done) &
	busy+=($!)
done

# Build once, then run the binaries themselves: a rebuild between runs would
# be part of the load, not of the test.
for spec in "$@"; do
	cargo test -q -p "${spec%%:*}" --test "${spec#*:}" --no-run 2>/dev/null
done

failed=0
for spec in "$@"; do
	pkg=${spec%%:*} test=${spec#*:}
	start=$SECONDS
	passed=0
	for ((run = 1; run <= repeat; run++)); do
		log="$out/$test.$run.log"
		if cargo test -q -p "$pkg" --test "$test" -- --test-threads=1 >"$log" 2>&1; then
			passed=$((passed + 1))
			rm -f "$log"
		else
			echo "repeat: $pkg $test failed in run $run of $repeat (output: $log)"
			failed=1
			break
		fi
	done
	echo "repeat: $pkg $test: $passed of $repeat runs passed in a row, with $load busy loops ($((SECONDS - start)) s)"
done
exit "$failed"
