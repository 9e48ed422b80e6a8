"""Peers of DESIGN §7: Terraform and octoDNS planning the same number of objects as
`crctl plan`, each paired with crctl in the same run (alternating runs, median of each).

- Terraform: one `terraform_data` resource block per user (main.tf.json, the local
  backend, no provider to download: terraform_data is built in). Applying
  100,000 resources would take many minutes, so the state is written directly as the
  JSON state file that `terraform apply` would have left (same attributes, one instance
  per user); the timed work is `terraform plan -refresh=false` with one object changed.
- octoDNS: one A record per user, YamlProvider to YamlProvider (`octodns-sync` without
  `--doit` plans only), the target zone holding the same records but one.
- crctl: `crctl plan` of the same users, one changed, against the applied account.

A peer that is not installed is skipped with a line saying so (`terraform` on PATH or
/usr/local/bin; octoDNS in benchmarks/out/octodns-venv, created with `pip install
octodns` when PyPI is reachable, or already importable by this interpreter).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIELDS = ("first_name", "last_name", "email", "extension", "phone_number", "profile",
          "location", "product")

Runner = Callable[..., tuple[float, float, int]]


def flat(user: dict[str, Any]) -> dict[str, str]:
    """A user as a map of strings: one object type for every Terraform instance."""
    out = {k: str(user.get(k, "")) for k in FIELDS[:-1]}
    out["product"] = (user.get("call_recording") or {}).get("product", "none")
    return out


def find_terraform() -> str | None:
    found = shutil.which("terraform")
    if found:
        return found
    return "/usr/local/bin/terraform" if os.access("/usr/local/bin/terraform", os.X_OK) \
        else None


def find_octodns(install: bool) -> str | None:
    """The octodns-sync to use: this interpreter's, or benchmarks/out/octodns-venv's
    (created now when `install` and PyPI answers)."""
    beside = Path(sys.executable).parent / "octodns-sync"
    if beside.exists():
        return str(beside)
    venv = HERE / "out" / "octodns-venv"
    sync = venv / "bin" / "octodns-sync"
    if not sync.exists() and install:
        print("... installing octodns into benchmarks/out/octodns-venv", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
        if made.returncode == 0:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "octodns"],
                           capture_output=True, timeout=600)
    return str(sync) if sync.exists() else None


def terraform_work(work: Path, base: dict[str, dict[str, Any]],
                   changed: dict[str, dict[str, Any]], terraform: str) -> Path:
    """A Terraform directory whose state holds `base` and whose config wants `changed`."""
    work.mkdir(parents=True, exist_ok=True)
    # One resource block per user (main.tf.json): `for_each` over one map of 1,000
    # objects took Terraform 1.11 93 s to plan here (3,000: 600 s), separate blocks 4 s.
    (work / "main.tf.json").write_text(json.dumps({"resource": {"terraform_data": {
        name: {"input": flat(user)} for name, user in changed.items()}}}), encoding="utf-8")
    kind = ["object", {k: "string" for k in FIELDS}]
    resources = []
    for name, user in base.items():
        value = flat(user)
        resources.append({
            "mode": "managed", "type": "terraform_data", "name": name,
            "provider": 'provider["terraform.io/builtin/terraform"]',
            "instances": [{"schema_version": 0, "attributes": {
                "id": str(uuid.UUID(int=len(resources) + 1)),
                "input": {"value": value, "type": kind},
                "output": {"value": value, "type": kind},
                "triggers_replace": None}, "sensitive_attributes": []}]})
    state = {"version": 4, "terraform_version": "1.11.4", "serial": 1,
             "lineage": "00000000-0000-4000-8000-000000000001", "outputs": {},
             "resources": resources, "check_results": None}
    (work / "terraform.tfstate").write_text(json.dumps(state), encoding="utf-8")
    (work / "cli.tfrc").write_text("", encoding="utf-8")
    subprocess.run([terraform, "init", "-input=false", "-no-color"], cwd=work, check=True,
                   capture_output=True, env=terraform_env(work))
    return work


def terraform_env(work: Path) -> dict[str, str]:
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(work / "cli.tfrc"),
            "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}


def octodns_work(work: Path, base: dict[str, dict[str, Any]],
                 changed: dict[str, dict[str, Any]]) -> Path:
    """A YamlProvider source holding `changed` as A records, its target holding `base`."""
    def zone(users: dict[str, dict[str, Any]]) -> str:
        lines = ["---"]
        for name in sorted(users):
            i = int(users[name]["extension"]) - 100_000
            if users[name].get("location") == "Halifax":
                i += 1  # the changed object's record points elsewhere
            lines.append(f"{name}:\n  type: A\n  value: 10.{i >> 16 & 255}.{i >> 8 & 255}."
                         f"{i & 255}")
        return "\n".join(lines) + "\n"

    for side, users in (("config", changed), ("target", base)):
        (work / side).mkdir(parents=True, exist_ok=True)
        (work / side / "big.example.yaml").write_text(zone(users), encoding="utf-8")
    (work / "octodns.yaml").write_text(
        "providers:\n"
        "  config:\n    class: octodns.provider.yaml.YamlProvider\n"
        f"    directory: {work / 'config'}\n"
        "  target:\n    class: octodns.provider.yaml.YamlProvider\n"
        f"    directory: {work / 'target'}\n"
        "zones:\n  big.example.:\n    sources: [config]\n    targets: [target]\n",
        encoding="utf-8")
    return work


def paired(run: Runner, a: list[str], b: list[str], repeat: int, env_a: dict[str, str],
           env_b: dict[str, str], cwd_b: Path | None = None) -> tuple[dict, dict]:
    """crctl (a) and a peer (b), alternately; median and peak of each."""
    out: list[dict[str, Any]] = [{"runs_s": [], "peak_mib": 0.0},
                                 {"runs_s": [], "peak_mib": 0.0}]
    for _ in range(repeat):
        for cmd, env, result, cwd in ((a, env_a, out[0], None), (b, env_b, out[1], cwd_b)):
            seconds, peak, _ = run(cmd, env, cwd=cwd)
            result["runs_s"].append(seconds)
            result["peak_mib"] = max(result["peak_mib"], peak)
    for result in out:
        result["median_s"] = statistics.median(result["runs_s"])
    return out[0], out[1]


def bench(run: Runner, sizes: list[int], repeat: int, work: Path, env: dict[str, str],
          make: Callable[[int], tuple[dict, dict, Path, Path]], install: bool
          ) -> dict[str, Any]:
    """Each available peer at each size next to crctl plan. `make(n)` gives (base users,
    changed users, crctl's changed file, crctl's applied state directory)."""
    terraform, octodns = find_terraform(), find_octodns(install)
    report: dict[str, Any] = {"sizes": sizes, "repeat": repeat, "terraform": [],
                              "octodns": [], "skipped": []}
    if terraform is None:
        report["skipped"].append("Terraform: no terraform on PATH or in /usr/local/bin")
    if octodns is None:
        report["skipped"].append("octoDNS: not installed (pip install octodns failed or "
                                 "PyPI is unreachable)")
    crctl = [sys.executable, "-m", "reconciler"]
    for n in sizes:
        base, changed, desired, state = make(n)
        plan = [*crctl, "--state-dir", str(state), "plan", str(desired)]
        if terraform:
            tf = terraform_work(work / f"tf{n}", base, changed, terraform)
            mine, theirs = paired(run, plan, [terraform, "plan", "-refresh=false",
                                              "-input=false", "-no-color",
                                              "-detailed-exitcode"],
                                  repeat, env, terraform_env(tf), cwd_b=tf)
            report["terraform"].append({"objects": n, "crctl_plan": mine,
                                        "terraform_plan": theirs,
                                        "ratio": theirs["median_s"] / mine["median_s"]})
            print(f"... Terraform at {n:,} objects done", file=sys.stderr)
        if octodns:
            od = octodns_work(work / f"octodns{n}", base, changed)
            mine, theirs = paired(run, plan, [octodns, "--config-file",
                                              str(od / "octodns.yaml")],
                                  repeat, env, dict(os.environ), cwd_b=od)
            report["octodns"].append({"objects": n, "crctl_plan": mine,
                                      "octodns_sync_plan": theirs,
                                      "ratio": theirs["median_s"] / mine["median_s"]})
            print(f"... octoDNS at {n:,} objects done", file=sys.stderr)
    return report
