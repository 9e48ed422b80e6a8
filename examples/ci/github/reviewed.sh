#!/usr/bin/env bash
# Merge job on GitHub (push to main): fetch what the reviewers approved for the pull
# request this push merged, for merge.sh:
#   reviewed.md  the pull request's crctl comment (its marker line holds the digest;
#                `merge.sh --reviewed reviewed.md` re-plans and applies only that);
#   plan.json    with `artifact` (the default strategy): the plan saved by the pull
#                request's last successful crctl run on its final commit
#                (`merge.sh plan.json reviewed.md`: applied only with the checksum that
#                reviewed.md's `<!-- crctl-ci checksum= -->` line pins).
# Exit 1, with the reason, when the push merged no pull request or nothing was reviewed:
# a direct push to main is then not applied (plan it in a pull request).
#
# Environment: GH_TOKEN (pull-requests: read, actions: read), GITHUB_REPOSITORY,
# GITHUB_SHA, CRCTL_CI_STRATEGY (artifact | replan), CRCTL_CI_BOT (default
# github-actions[bot]), CRCTL_CI_WORKFLOW (default crctl.yml).
set -euo pipefail

bot=${CRCTL_CI_BOT:-github-actions[bot]}
repo=$GITHUB_REPOSITORY
rm -f reviewed.md plan.json

pr=$(gh api "repos/$repo/commits/$GITHUB_SHA/pulls" --jq '.[0].number // empty')
if [ -z "$pr" ]; then
  echo "crctl: $GITHUB_SHA merged no pull request: nothing reviewed to apply" >&2
  exit 1
fi
id=$(gh api --paginate "repos/$repo/issues/$pr/comments" --jq \
  ".[] | select(.user.login == \"$bot\" and (.body | contains(\"<!-- crctl-plan digest=\"))) | .id" \
  | tail -n 1)
if [ -z "$id" ]; then
  echo "crctl: pull request #$pr has no crctl plan comment: nothing reviewed to apply" >&2
  exit 1
fi
gh api "repos/$repo/issues/comments/$id" --jq .body > reviewed.md

if [ "${CRCTL_CI_STRATEGY:-artifact}" = artifact ]; then
  head=$(gh api "repos/$repo/pulls/$pr" --jq .head.sha)
  run=$(gh run list --workflow "${CRCTL_CI_WORKFLOW:-crctl.yml}" --event pull_request \
    --commit "$head" --status success --limit 1 --json databaseId --jq '.[0].databaseId // empty')
  if [ -z "$run" ]; then
    echo "crctl: no successful crctl run of pull request #$pr at $head: no plan to apply" >&2
    exit 1
  fi
  gh run download "$run" --name crctl-plan --dir .
fi
echo "crctl: pull request #$pr reviewed (comment $id)"
