#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Build the libFuzzer targets with clang and run each for a bounded time.
#
#   tests/fuzz/run.sh SOURCE_DIR BUILD_DIR SECONDS_PER_TARGET [TARGET...]
#
# Configures BUILD_DIR with clang, -DFDX_FUZZ=ON and -DFDX_WERROR=ON (no tests, no tools),
# builds fdx-fuzz-data and fdx-fuzz-control, runs fdx-fuzz-interleave (exact
# replays of control-plane interleavings, interleave.c), then runs each (or only the
# TARGETs named: data, control) for SECONDS_PER_TARGET seconds on a copy of
# its seed corpus (SOURCE_DIR/tests/fuzz/corpus/TARGET; the repository's copy
# is never written). Prints the executions and executions per second of each.
# Exits non-zero if a target crashes, leaks, hangs (60 s) or does not run; the
# input that did it is left in BUILD_DIR/fuzz-out/TARGET/ (crash-*, leak-*,
# timeout-*), and reproduces with: BUILD_DIR/tests/fuzz/fdx-fuzz-TARGET FILE
#
# Extra libFuzzer flags may come in FDX_FUZZ_FLAGS (e.g. -jobs=2 -workers=2).
# Needs clang and libclang-rt-14-dev (libFuzzer and the sanitizers' runtimes);
# with llvm-14 (llvm-symbolizer) too, the reports name functions and lines.
set -euo pipefail

if ! command -v llvm-symbolizer >/dev/null && [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
	for s in /usr/lib/llvm-*/bin/llvm-symbolizer; do
		[ -x "$s" ] && export ASAN_SYMBOLIZER_PATH=$s
	done
fi

if [ $# -lt 3 ]; then
	echo "usage: $0 SOURCE_DIR BUILD_DIR SECONDS_PER_TARGET [data|control ...]" >&2
	exit 2
fi
src=$(cd "$1" && pwd)
build=$2
secs=$3
shift 3
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(data control)
jobs=$(nproc 2>/dev/null || echo 2)

echo "== fuzz: configure and build $build (clang, FDX_FUZZ=ON, FDX_WERROR=ON)"
cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DFDX_FUZZ=ON -DFDX_WERROR=ON -DFDX_BUILD_TESTS=OFF -DFDX_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fdx-fuzz-}" fdx-fuzz-interleave

out=$(cd "$build" && pwd)/fuzz-out
failed=()
echo "== fuzz: control-plane interleavings replayed (fdx-fuzz-interleave)"
if ! "$build/tests/fuzz/fdx-fuzz-interleave"; then
	failed+=("interleave")
fi
for t in "${targets[@]}"; do
	bin=$(cd "$build" && pwd)/tests/fuzz/fdx-fuzz-$t
	corpus=$out/$t/corpus
	log=$out/$t/log
	rm -rf "${out:?}/$t"
	mkdir -p "$corpus"
	cp "$src/tests/fuzz/corpus/$t/"* "$corpus/"
	echo "== fuzz: $t for ${secs} s ($(ls "$corpus" | wc -l) seeds)"
	rc=0
	# A timeout is an input that runs 60 s (inputs take milliseconds; a stalled VM must not
	# count); ASan's leak check runs after each input.
	(cd "$out/$t" && "$bin" -max_total_time="$secs" -timeout=60 -print_final_stats=1 \
		-artifact_prefix="$out/$t/" ${FDX_FUZZ_FLAGS:-} corpus) >"$log" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	echo "   $t: ${runs:-?} executions, ${rate:-?} exec/s, exit $rc"
	artifacts=$(ls "$out/$t" | grep -E '^(crash|leak|timeout|oom)-' || true)
	if [ "$rc" != 0 ] || [ -z "$runs" ] || [ -n "$artifacts" ]; then
		echo "   $t FAILED; the end of its log ($log):"
		tail -n 40 "$log" | sed 's/^/   | /'
		for a in $artifacts; do
			echo "   reproduce: $bin $out/$t/$a"
		done
		failed+=("$t")
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "== fuzz: FAILED: ${failed[*]}"
	exit 1
fi
echo "== fuzz: every target ran ${secs} s without a crash, leak or timeout"
