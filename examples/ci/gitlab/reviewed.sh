#!/usr/bin/env bash
# Merge job on GitLab (push to the default branch): fetch what the reviewers approved for
# the merge request this push merged, for merge.sh:
#   reviewed.md  the merge request's crctl note (its marker line holds the digest;
#                `merge.sh --reviewed reviewed.md` re-plans and applies only that);
#   plan.json    with CRCTL_CI_STRATEGY=artifact (the default): the plan saved by the last
#                successful crctl-plan job of the merge request (`merge.sh plan.json
#                reviewed.md`: applied only with the checksum reviewed.md's
#                `<!-- crctl-ci checksum= -->` line pins).
# Exit 1, with the reason, when the push merged no merge request or nothing was reviewed.
#
# Environment: CRCTL_GITLAB_TOKEN, CRCTL_CI_STRATEGY, and GitLab's CI_API_V4_URL,
# CI_PROJECT_ID, CI_COMMIT_SHA.
set -euo pipefail
. "$(dirname "$0")/api.sh"
rm -f reviewed.md plan.json

iid=$(gitlab_api "repository/commits/$CI_COMMIT_SHA/merge_requests" | python3 -c '
import json, sys
merged = [m["iid"] for m in json.load(sys.stdin) if m.get("state") == "merged"]
print(merged[0] if merged else "")')
if [ -z "$iid" ]; then
  echo "crctl: $CI_COMMIT_SHA merged no merge request: nothing reviewed to apply" >&2
  exit 1
fi
id=$(crctl_note_id "$iid")
if [ -z "$id" ]; then
  echo "crctl: merge request !$iid has no crctl plan note: nothing reviewed to apply" >&2
  exit 1
fi
gitlab_api "merge_requests/$iid/notes/$id" \
  | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["body"])' > reviewed.md

if [ "${CRCTL_CI_STRATEGY:-artifact}" = artifact ]; then
  gitlab_api --output plan.json \
    "jobs/artifacts/refs%2Fmerge-requests%2F$iid%2Fhead/raw/plan.json?job=crctl-plan"
fi
echo "crctl: merge request !$iid reviewed (note $id)"
