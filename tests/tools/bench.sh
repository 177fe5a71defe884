#!/bin/bash
# SPDX-License-Identifier: MIT
# fdx-bench, run for real and briefly: every mode with --json, --latency,
# --csv with --sizes, --plot (or its clear error without gnuplot), bad options.
# Every check is on the program's real output; nothing waits for time to pass.
# usage: bench.sh BUILD_DIR
set -euo pipefail

build=${1:?usage: bench.sh BUILD_DIR}
bench=$build/fdx-bench
if [ ! -x "$bench" ]; then
	echo "bench.sh: no program $bench"
	exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fdx-bench-sh.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
	echo "FAIL: $*"
	if [ -s "$tmp/err" ]; then
		echo "  its stderr (the end):"
		tail -n 20 "$tmp/err" | sed 's/^/    /'
	fi
	exit 1
}

# run RC ARGS...: run fdx-bench ARGS, which must exit with RC; stdout in $tmp/out, stderr in $tmp/err.
run() {
	local want=$1 rc=0
	shift
	timeout 120 "$bench" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
	[ "$rc" = "$want" ] || fail "fdx-bench $* exited with status $rc, not $want"
}

# check WHAT PYTHON [ARGS...]: run the Python code on $tmp/out (on stdin); it prints what it found.
check() {
	local what=$1 code=$2
	shift 2
	local said
	said=$(python3 -c "$code" "$@" <"$tmp/out" 2>&1) || fail "$what: $said"
	echo "ok: $what: $said"
}

echo "== every mode, 0.3 s, --json: one result with records_per_s > 0"
for mode in shm tcp local shm-ceiling tcp-copy grpc-data; do
	run 0 --mode "$mode" --seconds 0.3 --json
	check "$mode" '
import json, sys
rs = json.load(sys.stdin)["results"]
assert len(rs) == 1, "%d results, not 1" % len(rs)
r = rs[0]
assert r["mode"] == sys.argv[1], "mode %r" % r["mode"]
assert r["record_size"] == 1024, "record_size %r" % r["record_size"]
assert r["records_per_s"] > 0 and r["gbytes_per_s"] > 0 and r["records"] > 0, r
print("%.0f records/s, %.3f GB/s, %d records" % (r["records_per_s"], r["gbytes_per_s"], r["records"]))
' "$mode"
done

echo "== --latency, 300 samples: 0 < p50 <= p99 <= p99.9 <= max"
for mode in shm tcp-copy; do
	run 0 --latency --mode "$mode" --count 300 --seconds 10 --json
	check "$mode --latency" '
import json, sys
rs = json.load(sys.stdin)["results"]
assert len(rs) == 1, "%d results, not 1" % len(rs)
r = rs[0]
assert r["mode"] == sys.argv[1] and r["record_size"] == 64, r
assert 0 < r["samples"] <= 300, "samples %r" % r["samples"]
p50, p99, p999, mx = r["p50_us"], r["p99_us"], r["p999_us"], r["max_us"]
assert 0 < p50 <= p99 <= p999 <= mx, "p50 %r p99 %r p99.9 %r max %r" % (p50, p99, p999, mx)
print("%d samples: p50 %.1f us, p99 %.1f us, p99.9 %.1f us" % (r["samples"], p50, p99, p999))
' "$mode"
done

csv_check='
import csv, sys
rows = list(csv.reader(sys.stdin))
want = [int(s) for s in sys.argv[2].split(",")]
assert rows and rows[0][:5] == ["mode", "record_size", "channels", "records_per_s", "gbytes_per_s"], "header %r" % (rows[:1],)
body = rows[1:]
assert [int(r[1]) for r in body] == want, "record sizes %r, not %r" % ([r[1] for r in body], want)
for r in body:
	assert r[0] == sys.argv[1], "mode %r" % r[0]
	assert len(r) == len(rows[0]), "row %r" % r
	assert float(r[3]) > 0 and float(r[4]) > 0, "row %r" % r
print("header and %d rows: %s" % (len(body), "; ".join("%s B %.3f GB/s" % (r[1], float(r[4])) for r in body)))
'

echo "== --csv --sizes 64,1024: a header and one row per size"
run 0 --csv --sizes 64,1024 --mode tcp-copy --seconds 0.2
check "--csv" "$csv_check" tcp-copy 64,1024

echo "== --plot without gnuplot (PATH emptied): the CSV, a clear error naming the package, exit 2"
mkdir "$tmp/nopath"
rc=0
timeout 120 env PATH="$tmp/nopath" "$bench" --plot "$tmp/none.png" --mode tcp-copy --seconds 0.2 \
	>"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" = 2 ] || fail "--plot without gnuplot exited with status $rc, not 2"
grep -q "gnuplot-nox" "$tmp/err" || fail "--plot without gnuplot: no error naming gnuplot-nox"
[ ! -e "$tmp/none.png" ] || fail "--plot without gnuplot: an image appeared"
echo "ok: --plot without gnuplot: exit 2; $(grep -m1 -o 'install Debian.*gnuplot-nox)' "$tmp/err")"
check "--plot without gnuplot still prints the CSV" "$csv_check" tcp-copy 1024

if command -v gnuplot >/dev/null; then
	echo "== --plot with gnuplot: the CSV and a PNG image"
	run 0 --plot "$tmp/plot.png" --mode tcp-copy --sizes 64,1024 --seconds 0.2
	check "--plot prints the CSV" "$csv_check" tcp-copy 64,1024
	[ -s "$tmp/plot.png" ] || fail "--plot: no image at $tmp/plot.png"
	[ "$(head -c 4 "$tmp/plot.png" | od -An -tx1 | tr -d ' \n')" = 89504e47 ] ||
		fail "--plot: $tmp/plot.png is no PNG"
	echo "ok: --plot: a PNG of $(stat -c %s "$tmp/plot.png") bytes"
else
	echo "== --plot with gnuplot: skipped, gnuplot is not installed (Debian package gnuplot-nox)"
fi

echo "== bad values: a clear error and exit 2"
run 2 --record-size 3
grep -q -- "--record-size must be" "$tmp/err" || fail "--record-size 3: no clear error"
echo "ok: --record-size 3: $(head -n 1 "$tmp/err")"
run 2 --mode shm,bogus
grep -q "bogus" "$tmp/err" || fail "--mode shm,bogus: the error does not name the bad mode"
echo "ok: --mode shm,bogus: $(head -n 1 "$tmp/err")"

echo "bench.sh: every check passed"
