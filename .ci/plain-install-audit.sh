#!/usr/bin/env bash
# The auditor's install (docs/auditor-guide.md): `make install` alone, no test extras. A small DP
# run is made and audited with that environment; the audit must verify the accounting, not
# report a missing tool. Run by .ci/run after the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-plain
make install VENV="$VENV" >/dev/null
if "$VENV/bin/python" -c "import pytest" 2>/dev/null; then
  echo "plain install: pytest is installed, so this is not the install without test extras" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export SECURE_FEDSA_ANCHORS="$work/anchors" HF_HUB_OFFLINE=1
"$VENV/bin/secure-fedsa" run --num-layers 1 --max-examples 800 --clients 2 --partition iid \
  --rounds 1 --local-steps 2 --batch-size 64 --max-length 16 --eval-examples 10 \
  --out "$work/run" --quiet >/dev/null 2>&1
"$VENV/bin/secure-fedsa" audit "$work/run" --bundle "$work/bundle" >/dev/null
status=0
"$VENV/bin/secure-fedsa" audit "$work/bundle" --out "$work/report" >"$work/audit.txt" || status=$?
cat "$work/audit.txt"
if [ "$status" -ne 0 ] || ! grep -q "^PASS *accounting" "$work/audit.txt"; then
  echo "plain install: the audit did not verify the accounting (exit $status)" >&2
  exit 1
fi
echo "plain install: the audit verified the run from its bundle"
