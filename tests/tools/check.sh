#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs the tools for real, briefly: each part is a script of its own beside this one.
# usage: check.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: check.sh BUILD_DIR}
rc=0
for part in bench demo stat; do
	[ -f "$here/$part.sh" ] || continue
	echo "== tools: $part"
	if ! bash "$here/$part.sh" "$build"; then
		echo "== tools: $part FAILED"
		rc=1
	fi
done
exit $rc
