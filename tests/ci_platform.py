#!/usr/bin/env python3
"""A stand-in for the code-hosting platform in tests/test_ci_flow.py: the `gh` CLI of
GitHub and GitLab's REST API as `curl` reaches it, over one JSON file.

GitHub and GitLab themselves cannot run in a test; what examples/ci/github/*.sh and
examples/ci/gitlab/*.sh send them can. This program answers exactly the calls those
scripts make (and fails loudly on any other), so the tests run the scripts unchanged and
then check what a reviewer would see: the pull request's one crctl comment.

The file ($CRCTL_TEST_PLATFORM) holds `bot` (the CI token's user), `threads` (pull or
merge requests by number: `head`, `merge_commit_sha`, `labels`, `state`), `comments`
(`id`, `thread`, `author`, `body`) and `runs` (`id`, `thread`, `head`, `ok`, `plan`: the
plan artifact's text or null). The tests write threads and runs; the scripts write
comments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DB = Path(os.environ["CRCTL_TEST_PLATFORM"])
GITLAB_API = "https://gitlab.example/api/v4"


def load() -> dict[str, Any]:
    return json.loads(DB.read_text())


def save(db: dict[str, Any]) -> None:
    DB.write_text(json.dumps(db, indent=1))


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"{sys.argv[2]}: {message}\n")
    sys.exit(code)


def new_comment(db: dict[str, Any], thread: str, body: str) -> dict[str, Any]:
    comment = {"id": 1000 + len(db["comments"]), "thread": thread, "author": db["bot"],
               "body": body}
    db["comments"].append(comment)
    return comment


def comment_by_id(db: dict[str, Any], cid: str) -> dict[str, Any]:
    for comment in db["comments"]:
        if str(comment["id"]) == cid:
            return comment
    fail(f"no comment {cid}", 22)
    raise AssertionError


# -- gh ---------------------------------------------------------------------------------

def github_comment(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "user": {"login": c["author"]}, "body": c["body"],
            "html_url": f"https://github.example/pull/{c['thread']}#issuecomment-{c['id']}"}


def gh_output(value: Any, jq: str | None) -> None:
    text = json.dumps(value)
    if jq is None:
        sys.stdout.write(text + "\n")
        return
    result = subprocess.run(["jq", "-r", jq], input=text, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"--jq {jq!r}: {result.stderr.strip()}")
    sys.stdout.write(result.stdout)


def gh_api(args: list[str]) -> None:
    method, jq, fields, path = "GET", None, {}, None
    while args:
        arg = args.pop(0)
        if arg == "--paginate":
            continue
        if arg in ("--method", "-X"):
            method = args.pop(0)
        elif arg == "--jq":
            jq = args.pop(0)
        elif arg in ("-F", "--field", "-f", "--raw-field"):
            key, _, value = args.pop(0).partition("=")
            if arg in ("-F", "--field") and value.startswith("@"):
                value = Path(value[1:]).read_text()
            fields[key] = value
        elif path is None and not arg.startswith("-"):
            path = arg
        else:
            fail(f"unexpected argument {arg!r}")
    assert path is not None
    db = load()
    repo = os.environ["GITHUB_REPOSITORY"]
    prefix = f"repos/{repo}/"
    if not path.startswith(prefix):
        fail(f"HTTP 404: {path}", 1)
    parts = path[len(prefix):].split("/")
    if method == "GET" and parts[0] == "issues" and parts[2:] == ["comments"]:
        gh_output([github_comment(c) for c in db["comments"] if c["thread"] == parts[1]], jq)
    elif method == "POST" and parts[0] == "issues" and parts[2:] == ["comments"]:
        comment = new_comment(db, parts[1], fields["body"])
        save(db)
        gh_output(github_comment(comment), jq)
    elif parts[:2] == ["issues", "comments"] and len(parts) == 3:
        comment = comment_by_id(db, parts[2])
        if method == "PATCH":
            comment["body"] = fields["body"]
            save(db)
        gh_output(github_comment(comment), jq)
    elif method == "GET" and parts[0] == "commits" and parts[2:] == ["pulls"]:
        gh_output([{"number": int(n)} for n, t in db["threads"].items()
                   if t["merge_commit_sha"] == parts[1]], jq)
    elif method == "GET" and parts[0] == "pulls" and len(parts) == 2:
        thread = db["threads"][parts[1]]
        gh_output({"number": int(parts[1]), "head": {"sha": thread["head"]},
                   "labels": [{"name": n} for n in thread["labels"]]}, jq)
    else:
        fail(f"HTTP 404: {method} {path}")


def gh_run(args: list[str]) -> None:
    db = load()
    if args[0] == "list":
        options = dict(zip(args[1::2], args[2::2], strict=True))
        assert options["--event"] == "pull_request" and options["--status"] == "success"
        runs = [{"databaseId": r["id"]} for r in reversed(db["runs"])
                if r["head"] == options["--commit"] and r["ok"]]
        gh_output(runs[:int(options["--limit"])], options.get("--jq"))
    elif args[0] == "download":
        options = dict(zip(args[2::2], args[3::2], strict=True))
        run = next(r for r in db["runs"] if str(r["id"]) == args[1])
        if options["--name"] != "crctl-plan" or run["plan"] is None:
            fail(f"no artifact matches {options['--name']}")
        (Path(options["--dir"]) / "plan.json").write_text(run["plan"])
    else:
        fail(f"unexpected gh run {args}")


# -- curl (GitLab) ----------------------------------------------------------------------

def gitlab_note(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "author": {"username": c["author"]}, "body": c["body"]}


def curl(args: list[str]) -> None:
    method, body, output, url, token = "GET", None, None, None, None
    while args:
        arg = args.pop(0)
        if arg in ("--silent", "--show-error", "--fail", "--location"):
            continue
        if arg == "--header":
            name, _, value = args.pop(0).partition(": ")
            token = value if name == "PRIVATE-TOKEN" else token
        elif arg == "--request":
            method = args.pop(0)
        elif arg == "--data-urlencode":
            key, _, file = args.pop(0).partition("@")
            assert key == "body"
            body = Path(file).read_text()
            method = method if method != "GET" else "POST"
        elif arg == "--output":
            output = args.pop(0)
        elif url is None and not arg.startswith("-"):
            url = arg
        else:
            fail(f"unexpected argument {arg!r}")
    assert url is not None and url.startswith(GITLAB_API), url
    if not token:
        fail("(22) The requested URL returned error: 401", 22)
    split = urlsplit(url)
    query = parse_qs(split.query)
    path = split.path[len(urlsplit(GITLAB_API).path):]
    db = load()
    result: Any
    if path == "/user":
        result = {"username": db["bot"]}
    else:
        prefix = f"/projects/{os.environ['CI_PROJECT_ID']}/"
        assert path.startswith(prefix), path
        parts = path[len(prefix):].split("/")
        if parts[0] == "merge_requests" and parts[2] == "notes" and len(parts) == 3:
            if method == "POST":
                result = gitlab_note(new_comment(db, parts[1], body or ""))
                save(db)
            else:
                page, per_page = int(query["page"][0]), int(query["per_page"][0])
                notes = [gitlab_note(c) for c in db["comments"] if c["thread"] == parts[1]]
                result = notes[(page - 1) * per_page:page * per_page]
        elif parts[0] == "merge_requests" and parts[2] == "notes" and len(parts) == 4:
            comment = comment_by_id(db, parts[3])
            if method == "PUT":
                comment["body"] = body
                save(db)
            result = gitlab_note(comment)
        elif parts[:2] == ["repository", "commits"] and parts[3:] == ["merge_requests"]:
            result = [{"iid": int(n), "state": t["state"], "labels": t["labels"]}
                      for n, t in db["threads"].items() if t["merge_commit_sha"] == parts[2]]
        elif parts[:2] == ["jobs", "artifacts"] and parts[3:] == ["raw", "plan.json"]:
            ref = unquote(parts[2]).split("/")
            assert ref[:2] == ["refs", "merge-requests"] and ref[3] == "head", ref
            assert query["job"] == ["crctl-plan"]
            runs = [r for r in db["runs"] if r["thread"] == ref[2] and r["ok"]]
            if not runs or runs[-1]["plan"] is None:
                fail("(22) The requested URL returned error: 404", 22)
            Path(output or "/dev/stdout").write_text(runs[-1]["plan"])
            return
        else:
            fail(f"(22) The requested URL returned error: 404 ({method} {path})", 22)
    text = json.dumps(result)
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def main() -> None:
    """`ci_platform.py --as gh|curl ARGS...` (tests/test_ci_flow.py puts wrappers named gh
    and curl on PATH)."""
    assert sys.argv[1] == "--as"
    name, args = sys.argv[2], sys.argv[3:]
    if name == "gh" and args[:1] == ["api"]:
        gh_api(args[1:])
    elif name == "gh" and args[:1] == ["run"]:
        gh_run(args[1:])
    elif name == "curl":
        curl(args)
    else:
        fail(f"unexpected call {name} {args}")


if __name__ == "__main__":
    main()
