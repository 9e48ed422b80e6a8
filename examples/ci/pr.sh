#!/usr/bin/env bash
# Pull request job: validate the accounts, plan them against the shared state, and leave
# for the CI to post and keep:
#   comment.md  the sticky comment's body: crctl's markdown plan, whose hidden marker line
#               `<!-- crctl-plan digest=... -->` lets the bot find and update one comment
#               and lets the merge job re-plan and apply only that reviewed change
#               (with CRCTL_CI_FORCE=1 it also carries `<!-- crctl-ci force -->`), and
#               the CI's hidden line `<!-- crctl-ci checksum=HEX -->`: the checksum of
#               plan.json, which the merge job pins the artifact to;
#   plan.json   the saved plan, kept as an artifact for the merge job
#               (`merge.sh plan.json reviewed.md`: applied only with the reviewed checksum,
#               so an artifact edited after the review is refused).
#
# Exit status: 0 when the plan is made (changes or none); 5 when a safety limit refuses it
# (comment.md still shows the whole plan, violations first, so the review can happen:
# re-run with CRCTL_CI_FORCE=1 once reviewers accept it); any other crctl failure as is,
# without a comment. Runs under `bash -e`, as GitHub Actions and GitLab CI run steps.
#
# Environment: CRCTL_STATE (a read-only role is enough: plan never writes), libpq's PG*
# variables (PGPASSWORD from a secret), CRCTL_CI_FORCE=1 to plan with --force (the plan
# then records forced: true and its violations). The accounts are in accounts/.
set -euo pipefail

rm -f plan.json plan.md comment.md
crctl validate accounts/

# --detailed-exitcode: 0 no changes, 2 changes, anything else is a failure. `|| rc=$?`
# keeps `bash -e` from ending the job on the 2 that means "there is a plan to comment".
rc=0
if [ "${CRCTL_CI_FORCE:-}" = 1 ]; then
  crctl plan accounts/ --format markdown --detailed-exitcode --out plan.json --force > plan.md || rc=$?
else
  crctl plan accounts/ --format markdown --detailed-exitcode --out plan.json > plan.md || rc=$?
fi

case $rc in
  0|2) ;;
  5)
    { cat plan.md
      printf '\n---\n'
      printf '**Refused by a safety limit (exit 5).** Nothing can be applied as it is. '
      printf 'If the reviewers accept the violations above, they add the label '
      printf '`crctl-force` and plan again (`--force`, CRCTL_CI_FORCE=1): the saved plan '
      printf 'then records them, and the merge applies it without a second `--force`.\n'
    } > comment.md
    rm -f plan.json   # never an artifact: only a plan made with --force may carry violations
    echo "crctl: the plan breaks a safety limit (exit 5); comment.md shows it in full" >&2
    exit 5 ;;
  *)
    rm -f plan.json plan.md
    echo "crctl plan failed (exit $rc): no comment, no artifact" >&2
    exit "$rc" ;;
esac

digest=$(sh "$(dirname "$0")/digest.sh" < plan.md)
# The checksum of the saved plan as crctl computes it (`Checksum: HEX`, or `Checksum of
# the plan set (N accounts): HEX` for a directory): merge.sh applies plan.json only with it.
checksum=$(crctl show plan.json | sed -n 's/^Checksum[^:]*: \([0-9a-f]\{64\}\)\( .*\)\{0,1\}$/\1/p' | head -n 1)
if [ -z "$checksum" ]; then
  rm -f plan.json plan.md
  echo "crctl show plan.json printed no checksum: no comment, no artifact" >&2
  exit 1
fi
cp plan.md comment.md
printf '\n<!-- crctl-ci checksum=%s -->\n' "$checksum" >> comment.md
if [ "${CRCTL_CI_FORCE:-}" = 1 ]; then
  # merge.sh --reviewed reads this line: the reviewers approved a forced plan.
  printf '\n<!-- crctl-ci force -->\n_Planned with `--force`: approving this review accepts the violations above._\n' >> comment.md
fi
if [ "$rc" = 0 ]; then
  echo "No changes: the state already matches accounts/ (digest $digest)."
else
  echo "Planned changes, digest $digest: comment.md is the review, plan.json the artifact."
fi
