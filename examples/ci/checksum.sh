#!/bin/sh
# Prints the checksum of the saved plan a comment was made from, read from the CI's
# hidden line `<!-- crctl-ci checksum=HEX -->` that pr.sh adds to the comment (stdin: the
# comment's body, e.g. the approved pull-request comment). `merge.sh PLANFILE` applies
# the artifact only with that checksum (`crctl apply PLANFILE --checksum HEX`), so a
# plan.json edited after the review (and re-checksummed) is refused with exit 3.
# Exit 1 when the text holds no such line, or more than one: there is then no reviewed
# plan to pin, and the merge must never apply an unpinned one.
set -eu
sums=$(sed -n 's/^<!-- crctl-ci checksum=\([0-9a-f]\{64\}\) -->$/\1/p')
count=$(printf '%s' "$sums" | grep -c . || true)
if [ "$count" != 1 ]; then
  echo "no single '<!-- crctl-ci checksum=... -->' line in the reviewed comment: no reviewed plan to pin, nothing applied (re-run the pull request's crctl job, review its comment, then merge)" >&2
  exit 1
fi
echo "$sums"
