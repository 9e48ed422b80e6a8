#!/usr/bin/env bash
# Merge request job on GitLab: make FILE (comment.md from pr.sh) the merge request's one
# crctl note, found by crctl's marker line among the token user's notes and edited in
# place; the first plan creates it.
#
# Environment: CRCTL_GITLAB_TOKEN (project access token, Reporter, scope api), and
# GitLab's CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID.
set -euo pipefail
. "$(dirname "$0")/api.sh"

file=${1:?usage: note.sh FILE}
iid=$CI_MERGE_REQUEST_IID
id=$(crctl_note_id "$iid")
if [ -n "$id" ]; then
  gitlab_api --request PUT --data-urlencode "body@$file" "merge_requests/$iid/notes/$id" >/dev/null
  echo "crctl: updated note $id of !$iid"
else
  gitlab_api --request POST --data-urlencode "body@$file" "merge_requests/$iid/notes" >/dev/null
  echo "crctl: added the plan note to !$iid"
fi
