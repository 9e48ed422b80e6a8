#!/usr/bin/env bash
# Merge job (push to the main branch): apply what the pull request's reviewers approved,
# by one of the two strategies:
#   merge.sh PLANFILE [COMMENT]     apply the saved plan kept as the PR job's artifact,
#                                   exactly as reviewed: only with the checksum of the
#                                   approved comment's `<!-- crctl-ci checksum= -->` line
#                                   (COMMENT, default reviewed.md), so an artifact edited
#                                   after the review is refused (exit 3) and a comment
#                                   without that line applies nothing (exit 1); no prompt;
#                                   a plan saved with --force applies without a second one;
#   merge.sh --reviewed COMMENT     re-plan the merged commit and apply it only if its
#                                   digest is the one in the approved comment's marker line
#                                   (with --force when pr.sh marked the plan as forced);
#   merge.sh --expect DIGEST [--force]   the same with the digest given (a manual run after
#                                   a re-plan was reviewed).
# crctl refuses with exit 3 when the state moved since the review (another merge applied
# first, or the merged files differ from what was planned). This script then re-plans the
# merged commit into replan.md (a comment body with the new digest) and says what to do:
# review replan.md, then run `merge.sh --expect NEW_DIGEST`.
#
# After a successful apply it plans the accounts once more: if the merged commit still
# differs from the state (a merge whose apply was refused or never ran), it writes
# replan.md the same way and exits 3, so nothing merged stays unapplied unnoticed.
#
# Environment: CRCTL_STATE (a writer role), libpq's PG* variables (PGPASSWORD from a
# secret), CRCTL_ACTOR (a Decision Maker or Phone Manager of every changed account).
# The accounts are in accounts/. Runs under `bash -e`.
set -euo pipefail

here=$(dirname "$0")
usage="usage: merge.sh PLANFILE [COMMENT] | merge.sh --reviewed COMMENT | merge.sh --expect DIGEST [--force]"

replan() {
  # Plan the merged commit into replan.md for a new review (returns plan's exit status).
  local rc=0
  crctl plan accounts/ --format markdown --detailed-exitcode > replan.md || rc=$?
  case $rc in
    0|2|5) return "$rc" ;;
    *) echo "crctl plan failed (exit $rc)" >&2; exit "$rc" ;;
  esac
}

ask_for_review() {
  # $1: why; $2: the re-plan's exit status. Prints what to do next, on stderr.
  local digest flag=""
  digest=$(sh "$here/digest.sh" < replan.md)
  [ "$2" != 5 ] || flag=" --force"
  {
    echo "crctl: $1"
    echo "The merged commit is re-planned in replan.md (digest $digest)."
    [ "$2" != 5 ] || echo "That plan breaks a safety limit: only apply it if the review accepts it."
    echo "Review replan.md, then apply exactly that plan (a manual run of the merge job):"
    echo "  merge.sh --expect $digest$flag"
  } >&2
}

rm -f replan.md
rc=0
case ${1:-} in
  --reviewed)
    [ $# = 2 ] || { echo "$usage" >&2; exit 1; }
    digest=$(sh "$here/digest.sh" < "$2")
    if grep -q '^<!-- crctl-ci force -->$' "$2"; then
      crctl apply accounts/ --auto-approve --expect "$digest" --force || rc=$?
    else
      crctl apply accounts/ --auto-approve --expect "$digest" || rc=$?
    fi ;;
  --expect)
    digest=${2:-}
    if [ $# = 2 ] && [ -n "$digest" ]; then
      crctl apply accounts/ --auto-approve --expect "$digest" || rc=$?
    elif [ $# = 3 ] && [ -n "$digest" ] && [ "$3" = --force ]; then
      crctl apply accounts/ --auto-approve --expect "$digest" --force || rc=$?
    else
      echo "$usage" >&2; exit 1
    fi ;;
  ''|-*)
    echo "$usage" >&2; exit 1 ;;
  *)
    [ $# = 1 ] || [ $# = 2 ] || { echo "$usage" >&2; exit 1; }
    plan=$1
    reviewed=${2:-reviewed.md}
    if [ ! -f "$reviewed" ]; then
      echo "crctl: no reviewed comment $reviewed: no checksum to pin $plan to, nothing applied" >&2
      exit 1
    fi
    # Never an unpinned apply: checksum.sh exits 1 (and so does this script, bash -e)
    # when the comment holds no checksum line.
    sum=$(sh "$here/checksum.sh" < "$reviewed")
    crctl apply "$plan" --checksum "$sum" || rc=$? ;;
esac

if [ "$rc" = 3 ]; then
  prc=0
  replan || prc=$?
  ask_for_review "the reviewed plan no longer fits the state (exit 3, crctl says why above): it was not applied." "$prc"
  exit 3
fi
[ "$rc" = 0 ] || exit "$rc"

prc=0
replan || prc=$?
if [ "$prc" != 0 ]; then
  ask_for_review "applied, but the merged commit still differs from the state (a merge whose apply was refused or never ran)." "$prc"
  exit 3
fi
rm -f replan.md
echo "crctl: applied; the state matches accounts/."
