#!/bin/bash
# SPDX-License-Identifier: MIT
# fdx-stat against a running fdx-demo, found in the default directory (a private
# XDG_RUNTIME_DIR); its JSON and table; dead addresses and bad options.
# usage: stat.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: stat.sh BUILD_DIR}
run=$(mktemp -d)
out=$run/out
demo_pid=
cleanup() {
	[ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT
export XDG_RUNTIME_DIR=$run
fail() { echo "stat.sh: FAILED: $*"; cat "$out" 2>/dev/null || true; exit 1; }

# Nothing running yet: exit 1 with a clear message.
set +e
"$build/fdx-stat" --json >"$out" 2>&1
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "no TaskManager found in $run/fdx" "$out" || fail "empty directory: exit $rc"

"$build/fdx-demo" --seconds 8 >"$run/demo.out" 2>&1 &
demo_pid=$!
# Both TaskManagers publish their sockets, and the source connects: up to 15 s.
for _ in $(seq 150); do
	n=$( (ls "$run/fdx" 2>/dev/null || true) | grep -c '^tm-.*\.sock$' || true)
	grep -q "phase 1/3" "$run/demo.out" && [ "$n" -ge 2 ] && break
	sleep 0.1
done
grep -q "phase 1/3" "$run/demo.out" || fail "fdx-demo did not start"

"$build/fdx-stat" --json --interval 300 >"$out" || fail "fdx-stat --json exited $?"
python3 - "$out" <<'PY' || fail "JSON not as expected"
import json, sys
d = json.load(open(sys.argv[1]))
tms = {t["taskmanager_id"]: t for t in d["taskmanagers"]}
assert set(tms) == {"demo-source", "demo-sink"}, tms.keys()
src, snk = tms["demo-source"], tms["demo-sink"]
assert len(src["partitions"]) == 1 and not src["gates"]
p = src["partitions"][0]
assert p["id"] == "demo-source/partition-0"
assert len(p["subpartitions"]) == 4 and all(s["link"] == "shm" for s in p["subpartitions"])
assert p["numRecordsOut"] > 0 and 0 <= p["outPoolUsage"] <= 1 and p["outPoolMax"] == 128
assert 0 <= p["backPressuredTimeMsPerSecond"] <= 1000
# shm reads in place: each channel's credit is the library's in-place 20, no floating.
assert all(s["buffersInFlight"] <= 20 for s in p["subpartitions"])
# Each subpartition's credit round trip (shm: measured per buffer): counted, ordered percentiles.
for s in p["subpartitions"]:
    assert s["creditRoundTrips"] > 0, s
    assert 0 < s["creditRoundTripP50Ns"] <= s["creditRoundTripP99Ns"] <= s["creditRoundTripMaxNs"], s
    # Its parts: the control hop (a CreditUpdate written -> applied) and the sender's resume.
    assert 0 < s["creditWireP50Ns"] <= s["creditWireP99Ns"], s
    assert s["resumeP50Ns"] <= s["resumeP99Ns"], s
g = snk["gates"][0]
assert g["gate"] == 1 and g["channelsOpen"] == 4 and len(g["channels"]) == 4
assert g["numRecordsIn"] > 0 and 0 <= g["inPoolUsage"] <= 1 and g["inPoolMax"] == 4 * 20, g
assert all(c["exclusive"] == 16 and c["inplace"] == 20 and c["floating"] == 0
           for c in g["channels"]), g["channels"]
# The consumer's part: a buffer's hold and its credit's wait in the outbox.
assert all(0 < c["holdP50Ns"] <= c["holdP99Ns"] for c in g["channels"]), g["channels"]
assert all(c["creditWaitP50Ns"] <= c["creditWaitP99Ns"] for c in g["channels"])
assert all(0 < c["oneWayP50Ns"] <= c["oneWayP99Ns"] for c in g["channels"]), g["channels"]
print("stat.sh: JSON: demo-source partition (4 subpartitions, shm, outPoolUsage %.2f, "
      "backPressuredTimeMsPerSecond %.0f, credit round trip p50 %.0f us), demo-sink gate 1 "
      "(4 channels, inPoolUsage %.2f)"
      % (p["outPoolUsage"], p["backPressuredTimeMsPerSecond"],
         p["subpartitions"][0]["creditRoundTripP50Ns"] / 1e3, g["inPoolUsage"]))
PY
"$build/fdx-stat" --count 2 --interval 200 >"$out" || fail "fdx-stat --count 2 exited $?"
for w in "TaskManager demo-source" "TaskManager demo-sink" outPoolUsage inPoolUsage \
	backPressuredTimeMsPerSecond buffersInFlight inputFloatingBuffersUsage \
	"creditRoundTrip p50/p99"; do
	grep -q "$w" "$out" || fail "no '$w' in the table"
done
[ "$(grep -c "TaskManager demo-source" "$out")" -eq 2 ] || fail "not refreshed twice"
echo "stat.sh: table refreshed twice with both TaskManagers"
wait "$demo_pid" || fail "fdx-demo exited $? under fdx-stat's questions"
demo_pid=
grep -q "OK, every record verified" "$run/demo.out" || fail "fdx-demo did not verify"

# A named address nobody serves: the reason, exit 1. Bad options: exit 2.
set +e
"$build/fdx-stat" --count 1 "unix:$run/nobody.sock" >"$out" 2>&1
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "nobody.sock" "$out" || fail "dead address: exit $rc"
for args in "--interval 5" "--count 0" "--bogus"; do
	set +e
	# shellcheck disable=SC2086
	"$build/fdx-stat" $args >"$out" 2>&1
	rc=$?
	set -e
	[ $rc -eq 2 ] || fail "fdx-stat $args exited $rc, 2 expected"
done
echo "stat.sh: dead address exit 1, 3 bad command lines exit 2"

# A socket file a killed TaskManager left (nobody listens): skipped, and said so.
mkdir -p "$run/deaddir"
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' \
	"$run/deaddir/tm-999999-0.sock"
set +e
"$build/fdx-stat" --count 1 --dir "$run/deaddir" >"$out" 2>&1
rc=$?
set -e
[ $rc -eq 1 ] || fail "a directory of dead sockets: exit $rc, 1 expected"
grep -q "skipped 1 socket of TaskManagers no longer running in $run/deaddir" "$out" ||
	fail "the dead socket was not reported as skipped"
grep -q "no TaskManager found" "$out" || fail "no 'no TaskManager found'"
echo "stat.sh: a dead TaskManager's socket skipped and counted"
