#!/usr/bin/env bash
# Pull request job on GitHub: make FILE (comment.md from pr.sh) the pull request's one
# crctl comment. The comment is found by crctl's marker line (`<!-- crctl-plan digest=`)
# among the bot's own comments, and edited in place, so each push updates the same
# comment instead of adding one; the first plan creates it.
#
# Environment: GH_TOKEN (the job's github.token, with pull-requests: write),
# GITHUB_REPOSITORY, PR_NUMBER, CRCTL_CI_BOT (the token's login, default
# github-actions[bot]). Needs the gh CLI (preinstalled on GitHub's runners).
set -euo pipefail

file=${1:?usage: comment.sh FILE}
bot=${CRCTL_CI_BOT:-github-actions[bot]}
repo=$GITHUB_REPOSITORY
pr=$PR_NUMBER

id=$(gh api --paginate "repos/$repo/issues/$pr/comments" --jq \
  ".[] | select(.user.login == \"$bot\" and (.body | contains(\"<!-- crctl-plan digest=\"))) | .id" \
  | tail -n 1)
if [ -n "$id" ]; then
  gh api --method PATCH "repos/$repo/issues/comments/$id" -F "body=@$file" --jq .html_url
else
  gh api --method POST "repos/$repo/issues/$pr/comments" -F "body=@$file" --jq .html_url
fi
