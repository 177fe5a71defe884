#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The README's two quick-start commands.
#   bash tools/quickstart.sh demo   build, then run the main job: fdx-demo (about 30 s;
#                                   extra arguments go to it, e.g. --seconds 10 --link tcp)
#   bash tools/quickstart.sh test   build and run every test: plain, under ASan+UBSan, and
#                                   (as root) once more with hugepages reserved; then
#                                   each libFuzzer target for a minute. Every build of it
#                                   treats warnings as errors (FDX_WERROR), and a Release
#                                   build (not run) catches the optimiser's warnings
# Each installs the Debian packages it needs if they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

packages=(cmake make gcc pkg-config liburing-dev libprotobuf-c-dev protobuf-c-compiler
	  libgrpc-dev libcmocka-dev python3 clang libclang-rt-14-dev llvm-14)

install_missing() {
	local missing=() p
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "== installing Debian packages: ${missing[*]}"
	local sudo=""
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
		sudo=sudo
	fi
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() { # build DIR [cmake options...]
	local dir=$1
	shift
	echo "== configure and build $dir $*"
	cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
	cmake --build "$dir" -j "$jobs"
}

run_tests() { # run_tests DIR LABEL [ctest options...]
	local dir=$1 label=$2
	shift 2
	echo "== tests: $label"
	local log rc=0 line total bad
	log=$(mktemp)
	ctest --test-dir "$dir" --output-on-failure "$@" | tee "$log" || rc=$?
	# "NN% tests passed, F tests failed out of T"
	line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1)
	total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"${line:-0 out of 0}")
	bad=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"${line:-passed, 0 tests failed}")
	n_skipped=$((n_skipped + $(grep -c '\*\*\*Skipped' "$log" || true)))
	n_failed=$((n_failed + bad))
	n_passed=$((n_passed + total - bad))
	rm -f "$log"
	if [ "$rc" != 0 ] || [ -z "$line" ]; then
		failed+=("$label")
	fi
}

# The libFuzzer targets (data frames, control frames), each for FDX_FUZZ_SECONDS (60).
fuzz_pass() {
	local secs=${FDX_FUZZ_SECONDS:-60}
	echo "== fuzz: each target for $secs s"
	passes+=("fuzz")
	if bash tests/fuzz/run.sh . build-fuzz "$secs"; then
		n_passed=$((n_passed + 1))
	else
		n_failed=$((n_failed + 1))
		failed+=("fuzz")
	fi
}

hugepage_pass() {
	local knob=/proc/sys/vm/nr_hugepages old got
	if [ "$(id -u)" != 0 ] || [ ! -w "$knob" ]; then
		echo "== hugepage pass skipped: needs root to reserve hugepages in $knob"
		return 0
	fi
	old=$(cat "$knob")
	trap 'echo "$old" > '"$knob" EXIT
	echo $((old + 64)) > "$knob"
	got=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
	if [ "${got:-0}" -lt 16 ]; then
		echo "== hugepage pass skipped: the kernel gave only ${got:-0} free hugepages"
	else
		echo "== reserved hugepages: $got free (was $old reserved)"
		# Serial: the tests check how many hugepages their regions take.
		passes+=("hugepages")
		FDX_TEST_EXPECT_HUGEPAGES=1 run_tests build "plain, hugepages reserved" -j1
	fi
	echo "$old" > "$knob"
	trap - EXIT
	echo "== hugepages restored to $(cat "$knob")"
}

case "${1:-}" in
demo)
	install_missing
	# The build dir is shared with the test command, whose FDX_WERROR=ON stays in its cache.
	build build -DFDX_WERROR=OFF
	shift
	echo "== running the main job: build/fdx-demo $*"
	exec build/fdx-demo "$@"
	;;
test)
	install_missing
	failed=()
	n_passed=0 n_failed=0 n_skipped=0
	build build -DFDX_WERROR=ON
	passes=("plain")
	run_tests build "plain, no hugepages" -j "$jobs"
	# Built only, not run: warnings that only the optimiser sees fail the test command too.
	echo "== build: Release"
	build build-release -DCMAKE_BUILD_TYPE=Release -DFDX_WERROR=ON -DFDX_BUILD_TESTS=ON
	build build-asan -DFDX_SANITIZE=ON -DFDX_WERROR=ON
	passes+=("sanitized")
	run_tests build-asan "AddressSanitizer + UndefinedBehaviorSanitizer" -j "$jobs"
	hugepage_pass
	fuzz_pass
	n_passed=$((n_passed - n_skipped))
	if [ ${#failed[@]} -ne 0 ]; then
		echo "== FAILED: ${failed[*]}"
		echo "fdx: $n_passed passed, $n_failed failed, $n_skipped skipped"
		exit 1
	fi
	echo "== all test passes green: ${passes[*]}"
	echo "fdx: $n_passed passed, $n_failed failed, $n_skipped skipped"
	;;
*)
	echo "usage: bash tools/quickstart.sh demo|test" >&2
	exit 2
	;;
esac
