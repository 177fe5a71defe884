#!/bin/bash
# SPDX-License-Identifier: MIT
# fdx-bench, run for real and briefly: every mode with --json, --latency (the
# mechanisms too), --verbose, --compare, --csv with --sizes, --plot (or its
# clear error without gnuplot), bad options.
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

# Python put before each mode's own check: sane(r) checks what every JSON result must have.
# The CPU cost is a positive finite number; fdx's modes carry each channel's credit round
# trip (0 until the library measures it, never negative); a ceiling has its repetitions.
common='
import json, math, sys
def positive(r, key):
	v = r[key]
	assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "%s %r" % (key, v)
	return v
def sane(r, channels=1):
	for key in ("cpu_s", "cpu_s_per_GB", "cpu_us_per_record"):
		positive(r, key)
	if r["mode"] in ("shm", "tcp", "local"):
		rtt = r["credit_rtt"]
		assert [e["channel"] for e in rtt] == list(range(channels)), "credit_rtt %r" % rtt
		for e in rtt:
			for key in ("rtt_count", "rtt_p50_ns", "rtt_p99_ns", "rtt_max_ns"):
				assert isinstance(e[key], int) and e[key] >= 0, "credit_rtt %r" % e
		assert "cpu_producer_s" in r or r["mode"] == "local", r
	else:
		assert "credit_rtt" not in r, r
	if r["mode"] in ("shm-ceiling", "shm-ring") and not r.get("latency"):
		reps = r["rep_gbytes_per_s"]
		assert r["reps"] == len(reps) and 1 <= len(reps) <= 5, "reps %r" % reps
		assert all(math.isfinite(g) and g > 0 for g in reps), "reps %r" % reps
		assert min(reps) <= r["gbytes_per_s"] <= max(reps), "median %r of %r" % (r["gbytes_per_s"], reps)
		positive(r, "memory_bytes")
	return "cpu %.3f s/GB" % r["cpu_s_per_GB"]
'

echo "== every throughput mode, 0.3 s, --json: one result with records_per_s > 0, sane CPU"
for mode in shm tcp local shm-ceiling shm-ring tcp-copy grpc-data; do
	run 0 --mode "$mode" --seconds 0.3 --json
	check "$mode" "$common"'
rs = json.load(sys.stdin)["results"]
assert len(rs) == 1, "%d results, not 1" % len(rs)
r = rs[0]
assert r["mode"] == sys.argv[1], "mode %r" % r["mode"]
assert r["record_size"] == 1024, "record_size %r" % r["record_size"]
assert r["records_per_s"] > 0 and r["gbytes_per_s"] > 0 and r["records"] > 0, r
if r["mode"] == "shm-ceiling":
	# the default credits: 128 exclusive + 128 floating, within the pool of 288
	assert r["slots"] == 256 and r["memory_bytes"] == 256 * 32768, r
print("%.0f records/s, %.3f GB/s, %d records, %s"
	% (r["records_per_s"], r["gbytes_per_s"], r["records"], sane(r)))
' "$mode"
done

echo "== --latency, 300 samples: 0 < p50 <= p99 <= p99.9 <= max, the mechanisms too"
for mode in shm shm-ceiling tcp-copy uring-unix eventfd; do
	run 0 --latency --mode "$mode" --count 300 --seconds 10 --json
	check "$mode --latency" "$common"'
rs = json.load(sys.stdin)["results"]
assert len(rs) == 1, "%d results, not 1" % len(rs)
r = rs[0]
assert r["mode"] == sys.argv[1] and r["record_size"] == 64, r
assert 0 < r["samples"] <= 300, "samples %r" % r["samples"]
p50, p99, p999, mx = r["p50_us"], r["p99_us"], r["p999_us"], r["max_us"]
assert all(math.isfinite(v) for v in (p50, p99, p999, mx)), r
assert 0 < p50 <= p99 <= p999 <= mx, "p50 %r p99 %r p99.9 %r max %r" % (p50, p99, p999, mx)
print("%d samples: p50 %.1f us, p99 %.1f us, p99.9 %.1f us, %s"
	% (r["samples"], p50, p99, p999, sane(r)))
' "$mode"
done

echo "== --channels 3 --json: a credit round trip per channel"
run 0 --mode shm --channels 3 --seconds 0.2 --json
check "shm, 3 channels" "$common"'
r = json.load(sys.stdin)["results"][0]
assert r["channels"] == 3, r
print("%d channels in credit_rtt, %s" % (len(r["credit_rtt"]), sane(r, 3)))
'

# number PATTERN: the first number after PATTERN in $tmp/out, which must be finite and >= 0.
number() {
	python3 -c '
import math, re, sys
m = re.search(sys.argv[1] + r"\s*(-?[0-9]+(?:\.[0-9]+)?|nan|-?inf)", sys.stdin.read())
assert m, "no %r in the output" % sys.argv[1]
v = float(m.group(1))
assert math.isfinite(v) and v >= 0, "%s %r" % (sys.argv[1], m.group(1))
print(m.group(1))
' "$1" <"$tmp/out"
}

echo "== --verbose table: CPU per process, repetitions, credit round trips"
run 0 --mode shm,shm-ceiling,local --seconds 0.3 --verbose
for what in "cpu: producer" "cpu: the one process" "channel 0: credit rtt p50/p99/max" \
	"repetitions of" "min..max"; do
	v=$(number "$what") || fail "--verbose: $v"
	echo "ok: --verbose: '$what' $v"
done

echo "== --compare, 0.2 s: every throughput mode, the same-memory and CPU targets"
run 0 --compare --seconds 0.2
for mode in shm tcp local shm-ceiling shm-ring tcp-copy grpc-data; do
	v=$(number "(?m)^$mode +1024 +1 +[0-9]+ +[0-9.]+ +[0-9.]+") || fail "--compare: $mode: $v"
	echo "ok: --compare: $mode, cpu s/GB $v"
done
for what in "shm / shm-ceiling \\(same memory\\)" "shm cpu s/GB, at most tcp-copy's"; do
	v=$(number "$what") || fail "--compare: $v"
	echo "ok: --compare: '$what' $v"
done
grep -Eq "^(uring-unix|eventfd) " "$tmp/out" && fail "--compare ran a latency-only mechanism"

echo "== --latency --compare, 200 samples: the mechanisms last, labelled"
run 0 --latency --compare --count 200 --seconds 10
python3 -c '
import sys
lines = sys.stdin.read().split("\n")
table = lines[[l.split()[:1] for l in lines].index(["mode"]) + 1:]
table = table[:table.index("")]
rows = [l.split()[0] for l in table]
want = sys.argv[1:7] + ["--"] + sys.argv[7:]
assert rows == want, "rows %r, not %r" % (rows, want)
' shm tcp local shm-ceiling shm-ring tcp-copy grpc-data uring-unix eventfd <"$tmp/out" ||
	fail "--latency --compare: the rows are not in order with the mechanisms labelled"
for what in "gRPC one-way \\(grpc-data\\).*p50" \
	"io_uring Unix-socket one-way \\(uring-unix\\).*p50" "eventfd wake \\(eventfd\\).*p50"; do
	v=$(number "$what") || fail "--latency --compare: $v"
	echo "ok: --latency --compare: $(echo "$what" | sed 's/\\//g; s/\.\*p50//') p50 $v us"
done

csv_check='
import csv, sys
rows = list(csv.reader(sys.stdin))
want = [int(s) for s in sys.argv[2].split(",")]
assert rows and rows[0][:5] == ["mode", "record_size", "channels", "records_per_s", "gbytes_per_s"], "header %r" % (rows[:1],)
body = rows[1:]
assert [int(r[1]) for r in body] == want, "record sizes %r, not %r" % ([r[1] for r in body], want)
cpu = rows[0].index("cpu_s_per_GB")
for r in body:
	assert r[0] == sys.argv[1], "mode %r" % r[0]
	assert len(r) == len(rows[0]), "row %r" % r
	assert float(r[3]) > 0 and float(r[4]) > 0, "row %r" % r
	assert float(r[cpu]) > 0 and float(r[cpu]) < float("inf"), "cpu_s_per_GB %r" % r[cpu]
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
run 2 --mode eventfd
grep -q -- "--latency" "$tmp/err" || fail "--mode eventfd without --latency: no clear error"
echo "ok: --mode eventfd: $(head -n 1 "$tmp/err")"
run 2 --reps 0
grep -q -- "--reps must be" "$tmp/err" || fail "--reps 0: no clear error"
echo "ok: --reps 0: $(head -n 1 "$tmp/err")"

echo "bench.sh: every check passed"
