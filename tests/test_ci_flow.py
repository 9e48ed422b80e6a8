"""The CI flow of examples/ci/ end to end (DESIGN §8): plan on a pull request, apply on
merge, as GitHub Actions and GitLab CI run it.

A sample accounts repository (accounts/*.yaml, and examples/ci/ copied to ci/ as the
README says) is cloned twice: the pull-request runner's clone and the merge runner's
clone. They share nothing but the PostgreSQL state — the PR runner connects with a role
that holds only crctl_reader, the merge runner with one that holds crctl_writer (both
from `crctl init --print-sql`) — and what the platform keeps between jobs: the sticky
comment and the plan artifact (tests/ci_platform.py stands in for `gh` and GitLab's API).
Each job runs the `run:` / `script:` text of examples/ci/github/crctl.yml and
examples/ci/gitlab/.gitlab-ci.yml as the platforms do (bash -e, pipefail), with crctl
from PATH (this test's virtual environment first).

The walk, for each platform and both merge strategies (the artifact; re-plan with the
reviewed digest): onboarding two accounts; a change; a stale plan (another merge lands
in between: exit 3, re-plan, review, apply the new digest); a plan refused by a safety
limit (exit 5, the comment still shows all of it); the same plan forced and reviewed
(applied without a second --force). And an artifact forged after the review (a
refused plan's `forced` flipped, digest and checksum recomputed) is refused: the merge
pins the checksum of the reviewed comment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import EXAMPLES, REPO, canonical_sha256, crctl, crctl_env, resign

CI = EXAMPLES / "ci"
GITHUB_WORKFLOW = yaml.safe_load((CI / "github" / "crctl.yml").read_text())
GITLAB_CI = yaml.safe_load((CI / "gitlab" / ".gitlab-ci.yml").read_text())
PLATFORM = Path(__file__).resolve().parent / "ci_platform.py"
BOT_USER = "crbot"  # CRCTL_ACTOR of the merge runner: a Phone Manager of every account
BOT = {"github": "github-actions[bot]", "gitlab": "project_1_bot"}
MARKER = "<!-- crctl-plan digest="
README_ROLES = ["CREATE ROLE ci_pr LOGIN PASSWORD '...' IN ROLE crctl_reader;",
                "CREATE ROLE ci_merge LOGIN PASSWORD '...' IN ROLE crctl_writer;"]

BOT_YAML = """  crbot:
    first_name: CR
    last_name: Bot
    email: crbot@{account}.example
    extension: "{extension}"
    profile: Courtesy
    roles: [phone-manager]
"""


def github_step(job: str, step_id: str) -> str:
    """The `run:` text of a step of the GitHub workflow."""
    for step in GITHUB_WORKFLOW["jobs"][job]["steps"]:
        if step.get("id") == step_id:
            return str(step["run"])
    raise KeyError(step_id)


def gitlab_script(job: str, key: str = "script") -> str:
    """A GitLab job's script lines, as the runner runs them: one shell, in order."""
    return "\n".join(GITLAB_CI[job][key])


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "GIT_AUTHOR_NAME": "dev",
                                 "GIT_AUTHOR_EMAIL": "dev@example.com",
                                 "GIT_COMMITTER_NAME": "dev",
                                 "GIT_COMMITTER_EMAIL": "dev@example.com"})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def set_digest(plan: Any) -> str:
    """DESIGN §5, computed here: a document's digest is the sha256 of the canonical JSON
    of its account, prior_state, actions and mir; a plan set's, the sha256 of its
    documents' digests joined by newlines. Each document must carry its own digest."""
    if isinstance(plan, list):
        joined = "\n".join(set_digest(doc) for doc in plan)
        return hashlib.sha256(joined.encode()).hexdigest()
    pinned = {key: plan[key] for key in ("account", "prior_state", "actions", "mir")}
    digest = hashlib.sha256(json.dumps(pinned, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False).encode()).hexdigest()
    assert plan["digest"] == digest
    return digest


def set_checksum(plan: Any) -> str:
    """DESIGN §5, computed here: a document's checksum is the sha256 of the canonical JSON
    of everything else; a plan set's, the sha256 of its documents' checksums joined by
    newlines."""
    if isinstance(plan, list):
        joined = "\n".join(set_checksum(doc) for doc in plan)
        return hashlib.sha256(joined.encode()).hexdigest()
    checksum = canonical_sha256({k: v for k, v in plan.items() if k != "checksum"})
    assert plan["checksum"] == checksum
    return checksum


CHECKSUM_LINE = "<!-- crctl-ci checksum="


def comment_checksum(body: str) -> str:
    """The checksum of the CI's hidden line (pr.sh): the one the merge pins plan.json to."""
    lines = [line for line in body.splitlines() if line.startswith(CHECKSUM_LINE)]
    assert len(lines) == 1, body
    return lines[0][len(CHECKSUM_LINE):].removesuffix(" -->")


def comment_digest(body: str) -> str:
    line = next(line for line in body.splitlines() if MARKER in line)
    return line.split(MARKER, 1)[1].split()[0].rstrip("->")


@dataclass
class Job:
    """What a job run left: the exit status of its failing (or last) step, its output."""
    rc: int
    out: str
    workdir: Path


@dataclass
class Flow:
    """The accounts repository, its two runners, the shared state and the platform."""
    platform: str
    strategy: str
    root: Path
    reader_url: str
    writer_url: str
    state_sql: Callable[[str], str]
    numbers: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    @property
    def db(self) -> Path:
        return self.root / "platform.json"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    def load(self) -> dict[str, Any]:
        return dict(json.loads(self.db.read_text()))

    def save(self, data: dict[str, Any]) -> None:
        self.db.write_text(json.dumps(data, indent=1))

    # -- the repository ----------------------------------------------------------------

    def open_pr(self, branch: str, edit: Callable[[Path], None], base: str = "main") -> str:
        """A developer's pull request: a branch off `base` with one commit."""
        git(self.dev, "fetch", "-q", "origin")
        git(self.dev, "checkout", "-q", "-b", branch, f"origin/{base}")
        edit(self.dev / "accounts")
        git(self.dev, "commit", "-q", "-am", branch)
        git(self.dev, "push", "-q", "origin", branch)
        number = str(next(self.numbers))
        data = self.load()
        data["threads"][number] = {"branch": branch, "head": git(self.dev, "rev-parse", "HEAD"),
                                   "merge_commit_sha": None, "labels": [], "state": "opened"}
        self.save(data)
        return number

    def label(self, number: str, name: str) -> None:
        data = self.load()
        data["threads"][number]["labels"].append(name)
        self.save(data)

    def merge(self, number: str) -> str:
        """The PR is merged into main (a merge commit) and pushed."""
        data = self.load()
        thread = data["threads"][number]
        git(self.dev, "fetch", "-q", "origin")
        git(self.dev, "checkout", "-q", "-B", "main", "origin/main")
        git(self.dev, "merge", "-q", "--no-ff", "-m", f"Merge #{number}",
            f"origin/{thread['branch']}")
        git(self.dev, "push", "-q", "origin", "main")
        thread["merge_commit_sha"] = git(self.dev, "rev-parse", "HEAD")
        thread["state"] = "merged"
        self.save(data)
        return str(thread["merge_commit_sha"])

    def checkout(self, runner: str, ref: str) -> Path:
        """The runner's clone (made once), checked out at `ref`, with no file of an
        earlier job left in it (runners start from a clean checkout)."""
        clone = self.root / runner
        if not clone.exists():
            git(self.root, "clone", "-q", str(self.root / "origin.git"), runner)
        git(clone, "fetch", "-q", "origin")
        git(clone, "checkout", "-q", "--detach", ref)
        git(clone, "clean", "-qfdx")
        return clone

    # -- jobs --------------------------------------------------------------------------

    def env(self, url: str, extra: dict[str, str]) -> dict[str, str]:
        bin_dir = self.root / "bin"
        env = crctl_env(extra={
            "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                    f"{os.environ['PATH']}",
            "CRCTL_STATE": url, "PGPASSWORD": "from-a-secret",
            "CRCTL_TEST_PLATFORM": str(self.db), **extra})
        for name in list(env):
            if name.startswith(("GITHUB_", "CI_", "GITLAB_")):
                del env[name]
        env.update(extra)
        return env

    def shell(self, workdir: Path, script: str, env: dict[str, str]) -> Job:
        """A step as GitHub Actions (`bash -e {0}` with pipefail) and GitLab run it."""
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                                 script], cwd=workdir, env=env, capture_output=True,
                                text=True, timeout=300)
        out = result.stdout + result.stderr
        assert "Traceback" not in out, out
        return Job(result.returncode, out, workdir)

    def pr_job(self, number: str) -> Job:
        """The plan job of the PR's latest commit on the PR runner (reader role)."""
        thread = self.load()["threads"][number]
        clone = self.checkout("pr-runner", thread["head"])
        forced = "1" if "crctl-force" in thread["labels"] else ""
        if self.platform == "github":
            env = self.env(self.reader_url, {
                "CRCTL_CI_FORCE": forced, "GITHUB_REPOSITORY": "org/accounts",
                "GH_TOKEN": "token", "PR_NUMBER": number})
            job = self.shell(clone, github_step("plan", "plan"), env)
            if (clone / "comment.md").exists():  # if: !cancelled() && hashFiles(...)
                posted = self.shell(clone, github_step("plan", "comment"), env)
                assert posted.rc == 0, posted.out
        else:
            env = self.env(self.reader_url, {
                "CI_MERGE_REQUEST_LABELS": ",".join(thread["labels"]),
                "CI_API_V4_URL": "https://gitlab.example/api/v4", "CI_PROJECT_ID": "1",
                "CI_MERGE_REQUEST_IID": number, "CRCTL_GITLAB_TOKEN": "token"})
            job = self.shell(clone, gitlab_script("crctl-plan"), env)
            posted = self.shell(clone, gitlab_script("crctl-plan", "after_script"), env)
            assert posted.rc == 0, posted.out
        # the artifact is kept when the job succeeds
        plan = (clone / "plan.json").read_text() if job.rc == 0 else None
        data = self.load()
        data["runs"].append({"id": len(data["runs"]) + 1, "thread": number,
                             "head": thread["head"], "ok": job.rc == 0, "plan": plan})
        self.save(data)
        return job

    def merge_job(self, sha: str) -> Job:
        """The apply job of a push to main on the merge runner (writer role)."""
        clone = self.checkout("merge-runner", sha)
        if self.platform == "github":
            env = self.env(self.writer_url, {
                "CRCTL_ACTOR": BOT_USER, "GITHUB_REPOSITORY": "org/accounts",
                "GITHUB_SHA": sha, "GH_TOKEN": "token",
                "CRCTL_CI_STRATEGY": "artifact" if self.strategy == "artifact" else "replan",
                "GITHUB_STEP_SUMMARY": str(self.root / "summary.md")})
            job = self.shell(clone, github_step("apply", "reviewed"), env)
            if job.rc == 0:
                step = "apply-artifact" if self.strategy == "artifact" else "apply-reviewed"
                job = self.shell(clone, github_step("apply", step), env)
            if job.rc != 0 and (clone / "replan.md").exists():  # if: failure() && ...
                summary = self.shell(clone, github_step("apply", "replan"), env)
                assert summary.rc == 0, summary.out
        else:
            env = self.env(self.writer_url, {
                "CRCTL_ACTOR": BOT_USER, "CI_API_V4_URL": "https://gitlab.example/api/v4",
                "CI_PROJECT_ID": "1", "CI_COMMIT_SHA": sha, "CRCTL_GITLAB_TOKEN": "token",
                "CRCTL_CI_STRATEGY": "artifact" if self.strategy == "artifact" else "replan"})
            job = self.shell(clone, gitlab_script("crctl-apply"), env)
        return job

    def manual_job(self, digest: str, force: bool = False) -> Job:
        """After an exit 3 and a review: the manual run with the re-plan's digest."""
        sha = git(self.root / "origin.git", "rev-parse", "main")
        clone = self.checkout("merge-runner", sha)
        if self.platform == "github":
            env = self.env(self.writer_url, {"CRCTL_ACTOR": BOT_USER, "DIGEST": digest,
                                             "FORCE": "true" if force else "false"})
            return self.shell(clone, github_step("apply", "apply-digest"), env)
        env = self.env(self.writer_url, {"CRCTL_ACTOR": BOT_USER, "CRCTL_CI_DIGEST": digest,
                                         "CRCTL_CI_FORCE": "1" if force else ""})
        return self.shell(clone, gitlab_script("crctl-apply-digest"), env)

    # -- what people see ---------------------------------------------------------------

    def human_comment(self, number: str, body: str) -> None:
        data = self.load()
        data["comments"].append({"id": 1000 + len(data["comments"]), "thread": number,
                                 "author": "mallory", "body": body})
        self.save(data)

    def comments(self, number: str) -> list[str]:
        """The bodies of the bot's comments on the PR."""
        return [c["body"] for c in self.load()["comments"]
                if c["thread"] == number and c["author"] == BOT[self.platform]]

    def comment(self, number: str) -> str:
        """The PR's one crctl comment (sticky: never a second one)."""
        bodies = self.comments(number)
        assert len(bodies) == 1, bodies
        return bodies[0]

    def serials(self) -> dict[str, int]:
        rows = self.state_sql("SELECT account, serial FROM crctl.accounts ORDER BY account")
        return {a: int(s) for a, s in (line.split("|") for line in rows.split())}

    def cr_users(self, account: str) -> dict[str, str]:
        """The CR user list as a BI tool reads it (the cr_users view): username, product."""
        rows = self.state_sql(f"SELECT username, product FROM crctl.cr_users "
                              f"WHERE account = '{account}' ORDER BY username")
        return dict(line.split("|") for line in rows.splitlines())


# jdoe's service in examples/acme.yaml, removed whole by the refused pull requests
JDOE_CR = ("    call_recording:\n"
           "      product: always-on            # MiCloud Connect MIR Always-On\n"
           "      prevent_remove: true          # plans that remove this service are refused\n"
           "      access: all                   # Record Management Access: hears every "
           "recording\n")


def replace(account: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(accounts: Path) -> None:
        path = accounts / f"{account}.yaml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))
    return edit


def onboard(accounts: Path) -> None:
    for account, extension in (("acme", "2198"), ("globex", "198")):
        text = (EXAMPLES / f"{account}.yaml").read_text()
        path = accounts / f"{account}.yaml"
        path.write_text(text.rstrip("\n") + "\n"
                        + BOT_YAML.format(account=account, extension=extension))
    git(accounts.parent, "add", "accounts")


@pytest.fixture
def shared_state(pg_server: Any, pg_database: Callable[[], str]) -> Iterator[
        tuple[str, str, Callable[[str], str]]]:
    """A database set up by its DBA: crctl init, then the roles of `init --print-sql`
    and two log-in roles, ci_pr (crctl_reader) and ci_merge (crctl_writer)."""
    url = pg_database()
    database = url.split("/")[3].split("?")[0]
    assert crctl("--state", url, "init").returncode == 0
    sql = crctl("--state", url, "init", "--print-sql").stdout
    grants = sql.split("COMMIT;", 1)[1]
    for role in ("crctl_reader", "crctl_writer"):  # roles are per server, not per database
        grants = grants.replace(
            f"CREATE ROLE {role} NOLOGIN;",
            f"DO $$BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object "
            "THEN NULL; END$$;")
    pr_role, merge_role = f"ci_pr_{database}", f"ci_merge_{database}"  # one per database
    logins = " ".join(README_ROLES).replace("ci_pr ", f"{pr_role} ").replace(
        "ci_merge ", f"{merge_role} ").replace("'...'", "'from-a-secret'")
    pg_server.psql(f"{grants} {logins}", database)
    yield (url.replace("postgres@", f"{pr_role}@"), url.replace("postgres@", f"{merge_role}@"),
           lambda query: pg_server.psql(query, database))
    pg_server.psql(f"DROP OWNED BY crctl_reader, crctl_writer, {pr_role}, {merge_role}; "
                   f"DROP ROLE {pr_role}; DROP ROLE {merge_role};", database)


def make_flow(root: Path, platform: str, strategy: str,
              state: tuple[str, str, Callable[[str], str]]) -> Flow:
    """origin.git with main holding ci/ (examples/ci/ as the README says to copy it), a
    developer's clone, the fake platform on PATH as gh and curl."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("gh", "curl"):
        wrapper = bin_dir / name
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {PLATFORM} --as {name} \"$@\"\n")
        wrapper.chmod(0o755)
    (root / "platform.json").write_text(json.dumps(
        {"bot": BOT[platform], "threads": {}, "comments": [], "runs": []}))
    git(root, "init", "-q", "--bare", "-b", "main", "origin.git")
    seed = root / "dev"
    git(root, "clone", "-q", str(root / "origin.git"), "dev")
    git(seed, "checkout", "-q", "-b", "main")
    shutil.copytree(CI, seed / "ci")
    (seed / "accounts").mkdir()
    (seed / "accounts" / ".gitkeep").write_text("")
    (seed / ".gitignore").write_text("plan.json\nplan.md\ncomment.md\nreplan.md\nreviewed.md\n")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "the accounts repository")
    git(seed, "push", "-q", "origin", "main")
    reader, writer, sql = state
    return Flow(platform, strategy, root, reader, writer, sql)


@pytest.mark.parametrize("strategy", ["artifact", "replan"])
@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_pull_request_plans_and_merge_applies(platform: str, strategy: str, tmp_path: Path,
                                              shared_state: Any) -> None:
    flow = make_flow(tmp_path, platform, strategy, shared_state)

    # 1. onboarding: the PR runner (read-only) plans two new accounts, the merge applies
    onboarding = flow.open_pr("onboard", onboard)
    planned = flow.pr_job(onboarding)
    assert planned.rc == 0, planned.out
    body = flow.comment(onboarding)
    artifact = json.loads((planned.workdir / "plan.json").read_text())
    assert comment_digest(body) == set_digest(artifact)
    assert comment_checksum(body) == set_checksum(artifact)  # what the merge pins
    assert "`acme`" in body and "`globex`" in body
    assert flow.serials() == {}  # planning never writes, and the reader could not
    applied = flow.merge_job(flow.merge(onboarding))
    assert applied.rc == 0, applied.out
    assert flow.serials() == {"acme": 1, "globex": 1}

    # 2. a change: asmith gets Always-On; one comment, updated on each push of the PR
    #    (on GitHub only: the GitLab walk runs the same scripts through the same steps)
    if platform == "github":
        change = flow.open_pr("asmith-always-on", replace(
            "acme", "product: on-demand            # MiCloud Connect MIR On-Demand",
            "product: always-on"))
        assert flow.pr_job(change).rc == 0
        denied = crctl("--state", flow.reader_url, "--actor", BOT_USER, "apply",
                       flow.root / "pr-runner" / "accounts", "--auto-approve")
        assert denied.returncode == 1 and "permission denied" in denied.stderr  # read-only
        assert flow.pr_job(change).rc == 0  # a re-run edits the same comment
        body = flow.comment(change)
        assert "asmith" in body and "MiCloud Connect MIR Always-On" in body
        applied = flow.merge_job(flow.merge(change))
        assert applied.rc == 0, applied.out
        assert flow.serials() == {"acme": 2, "globex": 1}  # globex, unchanged, untouched
        assert flow.cr_users("acme")["asmith"] == "MiCloud Connect MIR Always-On"

    # 3. a stale plan: two PRs planned from the same state; the other one lands first
    carol = flow.open_pr("carol", lambda accounts: (accounts / "acme.yaml").write_text(
        (accounts / "acme.yaml").read_text() + "  carol:\n    first_name: Carol\n"
        "    last_name: Jones\n    email: carol@acme.example\n    extension: \"2104\"\n"
        "    profile: Premier\n    call_recording:\n      product: on-demand\n"))
    phone = flow.open_pr("asmith-phone", replace("acme", '"+16135550102"', '"+16135550112"'))
    assert flow.pr_job(carol).rc == 0
    flow.human_comment(phone, f"LGTM, but what about {MARKER}{'0' * 64} -->")
    assert flow.pr_job(phone).rc == 0  # its own comment: mallory's is neither edited nor read
    assert [c["body"][:4] for c in flow.load()["comments"] if c["author"] == "mallory"] \
        == ["LGTM"]
    reviewed = comment_digest(flow.comment(carol))
    serial = flow.serials()["acme"]
    assert flow.merge_job(flow.merge(phone)).rc == 0
    serial += 1
    assert flow.serials()["acme"] == serial
    stale = flow.merge_job(flow.merge(carol))
    assert stale.rc == 3, stale.out
    assert "it was not applied" in stale.out and "replan.md" in stale.out
    assert flow.serials()["acme"] == serial
    assert "carol" not in flow.cr_users("acme")
    replan = (stale.workdir / "replan.md").read_text()
    assert "carol" in replan and "+16135550112" not in replan  # only what is left to do
    digest = comment_digest(replan)
    assert digest != reviewed
    assert f"merge.sh --expect {digest}" in stale.out
    if platform == "github":
        assert (tmp_path / "summary.md").read_text() == replan  # the failed job's summary
    assert flow.manual_job("0" * 64).rc == 3  # a digest nobody reviewed changes nothing
    assert flow.serials()["acme"] == serial
    again = flow.manual_job(digest)
    assert again.rc == 0, again.out
    serial += 1
    assert flow.serials()["acme"] == serial
    assert flow.cr_users("acme")["carol"] == "MiCloud Connect MIR On-Demand"

    # 4. a safety refusal: jdoe's service has prevent_remove; the comment shows it all
    removal = flow.open_pr("jdoe-off", replace("acme", JDOE_CR, ""))
    refused = flow.pr_job(removal)
    assert refused.rc == 5, refused.out
    body = flow.comment(removal)
    assert "[!CAUTION]" in body and "jdoe" in body and "prevent_remove" in body
    assert MARKER in body and "Refused by a safety limit" in body
    assert flow.load()["runs"][-1]["plan"] is None  # nothing to apply was kept

    # 5. the reviewers accept it: label crctl-force, re-plan, merge without a second --force
    flow.label(removal, "crctl-force")
    forced = flow.pr_job(removal)
    assert forced.rc == 0, forced.out
    body = flow.comment(removal)  # the same comment, now the forced plan
    assert "<!-- crctl-ci force -->" in body and "[!CAUTION]" in body
    saved = json.loads((forced.workdir / "plan.json").read_text())
    docs = saved if isinstance(saved, list) else [saved]
    assert [d["forced"] for d in docs] == [True] and docs[0]["violations"]
    applied = flow.merge_job(flow.merge(removal))
    assert applied.rc == 0, applied.out
    assert flow.serials() == {"acme": serial + 1, "globex": 1}
    assert "jdoe" not in flow.cr_users("acme")


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_an_artifact_forged_after_the_review_is_refused(platform: str, tmp_path: Path,
                                                        shared_state: Any) -> None:
    """The artifact strategy's threat: whoever can replace plan.json after the review (the
    PR's own job runs the PR branch's scripts) edits it and redoes digest and checksum
    with plain sha256. The merge pins the checksum of the reviewed comment, so the forged
    plan is refused (exit 3) and nothing is applied; a comment without the checksum line
    applies nothing either (exit 1); the reviewed plan itself still applies."""
    flow = make_flow(tmp_path, platform, "artifact", shared_state)
    onboarding = flow.open_pr("onboard", onboard)
    assert flow.pr_job(onboarding).rc == 0
    assert flow.merge_job(flow.merge(onboarding)).rc == 0
    before = flow.serials()
    users = flow.cr_users("acme")

    # reviewed: carol joins acme (the comment pins that plan's checksum)
    change = flow.open_pr("carol", lambda accounts: (accounts / "acme.yaml").write_text(
        (accounts / "acme.yaml").read_text() + "  carol:\n    first_name: Carol\n"
        "    last_name: Jones\n    email: carol@acme.example\n    extension: \"2104\"\n"
        "    profile: Premier\n    call_recording:\n      product: on-demand\n"))
    planned = flow.pr_job(change)
    assert planned.rc == 0, planned.out
    body = flow.comment(change)
    assert comment_checksum(body) == set_checksum(
        json.loads((planned.workdir / "plan.json").read_text()))

    # then a second commit removes jdoe's prevent_remove service (refused: exit 5), and
    # the job of that commit keeps a forged artifact instead of updating the comment: the
    # refused plan with `forced` flipped to true, digest and checksum recomputed
    git(flow.dev, "checkout", "-q", "carol")
    replace("acme", JDOE_CR, "")(flow.dev / "accounts")
    git(flow.dev, "commit", "-q", "-am", "jdoe off")
    git(flow.dev, "push", "-q", "origin", "carol")
    head = git(flow.dev, "rev-parse", "HEAD")
    clone = flow.checkout("pr-runner", head)
    refused_plan = crctl("--state", flow.reader_url, "plan", clone / "accounts",
                         "--out", tmp_path / "forged.json")
    assert refused_plan.returncode == 5, refused_plan.stderr
    forged = json.loads((tmp_path / "forged.json").read_text())
    docs = forged if isinstance(forged, list) else [forged]
    assert any(doc["violations"] for doc in docs)
    for doc in docs:
        doc["forced"] = True
        resign(doc)
    (tmp_path / "forged.json").write_text(json.dumps(forged, indent=2))
    assert set_checksum(forged) != comment_checksum(body)
    assert crctl("show", tmp_path / "forged.json").returncode == 0  # hashes match content
    data = flow.load()
    data["threads"][change]["head"] = head
    data["runs"].append({"id": len(data["runs"]) + 1, "thread": change, "head": head,
                         "ok": True, "plan": json.dumps(forged, indent=2)})
    flow.save(data)

    merged = flow.merge(change)
    refused = flow.merge_job(merged)
    assert refused.rc == 3, refused.out
    assert "altered" in refused.out and "it was not applied" in refused.out
    assert flow.serials() == before and flow.cr_users("acme") == users  # nothing applied
    assert "jdoe" in flow.cr_users("acme") and "carol" not in flow.cr_users("acme")

    # a reviewed comment without the checksum line (an older pr.sh): never unpinned
    data = flow.load()
    bot_comment = next(c for c in data["comments"]
                       if c["thread"] == change and c["author"] == BOT[platform])
    bot_comment["body"] = "\n".join(line for line in body.splitlines()
                                    if not line.startswith(CHECKSUM_LINE))
    flow.save(data)
    unpinned = flow.merge_job(merged)
    assert unpinned.rc == 1, unpinned.out
    assert "crctl-ci checksum=" in unpinned.out and "nothing applied" in unpinned.out
    assert flow.serials() == before and flow.cr_users("acme") == users


def test_a_push_that_merged_no_pull_request_applies_nothing(tmp_path: Path,
                                                            shared_state: Any) -> None:
    flow = make_flow(tmp_path, "github", "artifact", shared_state)
    git(flow.dev, "checkout", "-q", "main")
    onboard(flow.dev / "accounts")
    git(flow.dev, "commit", "-q", "-m", "straight to main")
    git(flow.dev, "push", "-q", "origin", "main")
    job = flow.merge_job(git(flow.dev, "rev-parse", "HEAD"))
    assert job.rc == 1 and "merged no pull request" in job.out
    assert flow.serials() == {}


def test_an_invalid_file_fails_the_pull_request_without_a_comment(
        tmp_path: Path, shared_state: Any) -> None:
    flow = make_flow(tmp_path, "github", "artifact", shared_state)

    def onboard_with_a_typo(accounts: Path) -> None:
        onboard(accounts)
        replace("acme", 'extension: "2102"', 'extension: "21x2"')(accounts)

    broken = flow.open_pr("broken", onboard_with_a_typo)
    job = flow.pr_job(broken)
    assert job.rc == 1, job.out
    assert "acme.yaml:" in job.out and "extension" in job.out  # file:line:col, the field
    assert flow.comments(broken) == [] and not (job.workdir / "plan.json").exists()
    assert flow.load()["runs"][-1]["ok"] is False


def test_the_install_step_puts_crctl_on_a_fresh_runner(tmp_path: Path) -> None:
    """The workflows' install step, in a fresh virtual environment (a runner's Python)."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "runner")], check=True)
    runner_bin = tmp_path / "runner" / "bin"
    env = {**crctl_env(), "PATH": f"{runner_bin}{os.pathsep}{os.environ['PATH']}",
           "CRCTL_PIP": f"{REPO}[postgresql]"}
    step = github_step("plan", "install")
    assert step == github_step("apply", "install") == GITLAB_CI["default"]["before_script"][0]
    installed = subprocess.run(["bash", "-eo", "pipefail", "-c", step], env=env,
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    version = subprocess.run(["bash", "-c", "crctl --version"], env=env,
                             capture_output=True, text=True)
    assert version.returncode == 0 and "crctl, version" in version.stdout
    assert shutil.which("crctl", path=env["PATH"]) == str(runner_bin / "crctl")


def readme_ci_blocks(language: str) -> list[str]:
    """The lines of the README's "In CI" code blocks in `language`."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## In CI\n", 1)[1].split("\n## ", 1)[0]
    lines: list[str] = []
    for block in section.split(f"```{language}\n")[1:]:
        lines += [line for line in block.split("```", 1)[0].splitlines()
                  if line.strip() and not line.startswith("#")]
    return lines


def test_every_command_of_the_readme_ci_section_is_a_step_the_flow_runs() -> None:
    """Each shell line of the README's "In CI" section is (part of) a `run:` or `script:`
    text that the tests above run; the SQL block is what shared_state runs."""
    steps = [str(step["run"]) for job in GITHUB_WORKFLOW["jobs"].values()
             for step in job["steps"] if "run" in step]
    steps += [line for job in GITLAB_CI.values() if isinstance(job, dict)
              for key in ("script", "after_script", "before_script")
              for line in job.get(key, [])]
    commands = readme_ci_blocks("sh")
    assert "ci/pr.sh" in commands and "ci/merge.sh plan.json reviewed.md" in commands
    for command in commands:
        assert any(command in step for step in steps), command
    assert readme_ci_blocks("sql") == README_ROLES
