#!/bin/sh
# Prints the digest of the plan a comment shows, read from its hidden marker line
# `<!-- crctl-plan digest=HEX ... -->` (stdin: the comment's body, e.g. plan.md or the
# approved pull-request comment). Exit 1 when the text holds no marker: there is then
# nothing reviewed to pin, and the merge must not guess.
set -eu
digest=$(sed -n 's/^.*<!-- crctl-plan digest=\([0-9a-f]\{64\}\)[ >].*$/\1/p' | head -n 1)
if [ -z "$digest" ]; then
  echo "no '<!-- crctl-plan digest=... -->' marker line: not a crctl plan comment" >&2
  exit 1
fi
echo "$digest"
