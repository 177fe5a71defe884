#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fdx.install: install fdx from a build tree into a temporary prefix, check the
# installed shared library (SONAME, exported symbols), then build and run
# consumer.c against the installed copy twice: with pkg-config, and as a CMake
# project that calls find_package(fdx) (CMakeLists.txt here; shared and static).
#
# usage: check.sh BUILD_DIR THIS_DIR
set -euo pipefail

if [[ $# -ne 2 ]]; then
	echo "usage: $0 FDX_BUILD_DIR TESTS_INSTALL_DIR" >&2
	exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fdx-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
problems=()
# Nothing from the caller's environment (a build tree, say) may stand in for the install.
unset LD_LIBRARY_PATH

step() { printf '\n== %s\n' "$*"; }
fail() {
	printf 'install check: FAILED: %s\n' "$*" >&2
	exit 1
}
# A problem that does not stop the later checks; reported at the end.
problem() {
	printf 'PROBLEM: %s\n' "$*" >&2
	problems+=("$*")
}
# Run a command, showing its output only if it fails.
quiet() {
	if ! "$@" >"$tmp/cmd.log" 2>&1; then
		cat "$tmp/cmd.log" >&2
		fail "$*"
	fi
}
# The path the dynamic loader picks for libfdx.so.0 when running $1.
resolved_libfdx() {
	ldd "$1" | awk '$1 == "libfdx.so.0" { print $3 }'
}

step "install: cmake --install $build --prefix $prefix"
quiet cmake --install "$build" --prefix "$prefix"
pc=$(find "$prefix" -path '*/pkgconfig/fdx.pc' -print -quit)
[[ -n $pc ]] || fail "no pkgconfig/fdx.pc installed under $prefix"
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
echo "libdir: ${libdir#"$prefix"/}, fdx.pc: ${pc#"$prefix"/}"
for f in "$prefix/include/fdx/fdx.h" "$libdir/libfdx.so" "$libdir/libfdx.a" \
	"$libdir/cmake/fdx/fdxConfig.cmake"; do
	[[ -e $f ]] || fail "$f was not installed"
done

step "shared library: SONAME and exported symbols"
lib=$(readlink -f "$libdir/libfdx.so")
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == libfdx.so.0 ]] || fail "$lib has SONAME '$soname', expected libfdx.so.0"
echo "${lib#"$prefix"/}: SONAME $soname"
# nm -D prints "value type name@@version"; the version node itself is FDX_0.1.
syms=$(nm -D --defined-only "$lib" | awk '{ print $NF }' | grep -v '^FDX_[0-9.]*$' || true)
[[ -n $syms ]] || fail "$lib exports no symbols"
internal=$(grep '^fdx__' <<<"$syms" || true)
[[ -z $internal ]] || fail "internal symbols are exported:" "$internal"
foreign=$(grep -v '^fdx_' <<<"$syms" || true)
[[ -z $foreign ]] || fail "symbols outside the fdx_ namespace are exported:" "$foreign"
unversioned=$(grep -v '@@FDX_0\.1$' <<<"$syms" || true)
[[ -z $unversioned ]] || fail "exported symbols outside version FDX_0.1:" "$unversioned"
echo "$(wc -l <<<"$syms") symbols exported, all fdx_*@@FDX_0.1, none fdx__*"

step "pkg-config consumer"
pkgconf() { PKG_CONFIG_PATH=$pcdir pkg-config "$@" fdx; }
echo "pkg-config --modversion fdx: $(pkgconf --modversion)"
flags=$(pkgconf --cflags --libs)
echo "pkg-config --cflags --libs fdx: $flags"
includedir=$(realpath -m "$(pkgconf --variable=includedir)")
if [[ $includedir != "$prefix"/* ]]; then
	problem "fdx.pc is not relocatable: includedir is $includedir after" \
		"'cmake --install --prefix $prefix' (prefix= is fixed at configure time)"
	flags=$(pkgconf --define-variable=prefix="$prefix" --cflags --libs)
	echo "going on with --define-variable=prefix=$prefix: $flags"
fi
# shellcheck disable=SC2086 # flags are words by design
quiet cc -std=c11 -Wall -Wextra -Werror -o "$tmp/consumer_pc" "$src/consumer.c" $flags
echo "built consumer_pc; running it with LD_LIBRARY_PATH=$libdir"
[[ $(LD_LIBRARY_PATH=$libdir resolved_libfdx "$tmp/consumer_pc") == "$libdir"/* ]] ||
	fail "consumer_pc does not load libfdx.so.0 from $libdir"
LD_LIBRARY_PATH=$libdir "$tmp/consumer_pc" || fail "consumer_pc exited with $?"

step "find_package consumer (shared and static)"
quiet cmake -S "$src" -B "$tmp/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo
found=$(sed -n 's/^fdx_DIR:PATH=//p' "$tmp/consumer-build/CMakeCache.txt")
[[ $found == "$prefix"/* ]] || fail "find_package(fdx) found $found, not the installed copy"
echo "find_package(fdx 0.1) found ${found#"$prefix"/}"
quiet cmake --build "$tmp/consumer-build"
shared=$tmp/consumer-build/consumer_shared
static=$tmp/consumer-build/consumer_static
[[ $(resolved_libfdx "$shared") == "$libdir"/* ]] ||
	fail "consumer_shared does not load libfdx.so.0 from $libdir"
if readelf -d "$static" | grep -q 'NEEDED.*libfdx'; then
	fail "consumer_static depends on the shared libfdx"
fi
echo "running consumer_shared (libfdx.so.0 from the prefix, by RUNPATH)"
"$shared" || fail "consumer_shared exited with $?"
echo "running consumer_static (no libfdx.so dependency)"
"$static" || fail "consumer_static exited with $?"

step "examples/: a producer and a consumer over shm, built against the installed copy"
examples=$(cd "$src/../../examples" && pwd)
for ex in producer consumer; do
	# shellcheck disable=SC2086 # flags are words by design
	quiet cc -std=c11 -Wall -Wextra -Werror -o "$tmp/$ex" "$examples/$ex.c" $flags
done
mkfifo "$tmp/addr"
LD_LIBRARY_PATH=$libdir timeout 60 "$tmp/consumer" >"$tmp/addr" 2>"$tmp/consumer.err" &
cons=$!
exec 3<"$tmp/addr"
read -r -t 30 addr <&3 || fail "the example consumer printed no address"
echo "consumer serves $addr"
rc=0
LD_LIBRARY_PATH=$libdir timeout 60 "$tmp/producer" "$addr" 100000 || rc=$?
if ((rc)); then
	cat "$tmp/consumer.err" >&2
	fail "the example producer exited with $rc"
fi
read -r -t 30 summary <&3 || true
exec 3<&-
wait "$cons" || fail "the example consumer exited with $?: $summary $(cat "$tmp/consumer.err")"
echo "$summary"
[[ $summary == "consumer: 100000 records, 0 bad" ]] || fail "the example consumer said: $summary"

if ((${#problems[@]})); then
	printf '\n'
	printf 'install check: FAILED: %s\n' "${problems[@]}" >&2
	exit 1
fi
echo
echo "install check: pkg-config consumer OK, find_package consumer (shared, static) OK, examples OK"
