"""`crctl validate` over the example files: every refusal in examples/invalid/ is reported
exactly where its `# expect:` annotation says, and the valid examples pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EXAMPLES, INVALID, assert_no_traceback, expectations, run_crctl, user_yaml

INVALID_FILES = sorted(p for p in INVALID.iterdir() if p.suffix in (".yaml", ".yml"))
VALID_FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml"))


def test_there_are_examples() -> None:
    assert len(INVALID_FILES) >= 40
    assert len(VALID_FILES) >= 2


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.name)
def test_invalid_example_is_refused_where_annotated(path: Path, tmp_path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' annotation"
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 1, result
    assert_no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    for exp in expected:
        assert any(exp.matches(str(path), line) for line in errors), (
            f"expected {path.name}:{exp}\ngot:\n{result.stderr}")
    # Nothing beyond what is annotated: each error line is accounted for.
    assert len(errors) == len(expected), result.stderr
    assert "1 of 1 file(s)" in result.stderr


def test_python_tag_example_runs_nothing(tmp_path: Path) -> None:
    result = run_crctl("validate", INVALID / "python-tag.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "hi" not in result.stdout.split()


def test_annotations_use_the_file_stem_as_account() -> None:
    """The stem rule must not add noise to examples that test something else."""
    exempt = {"account-stem", "bad-account-id", "missing-account", "not-a-mapping", "empty",
              "users-not-mapping", "non-utf8"}
    for path in INVALID_FILES:
        if path.stem in exempt:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        assert f"\naccount: {path.stem}\n" in text, path.name


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_valid_example_passes(path: Path, tmp_path: Path) -> None:
    result = run_crctl("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert result.stderr == ""
    assert "1 file is valid." in result.stdout


def test_valid_examples_pass_together(tmp_path: Path) -> None:
    """Several paths validate together (DESIGN §4: `validate PATH...`)."""
    result = run_crctl("validate", *VALID_FILES, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{len(VALID_FILES)} files are valid." in result.stdout


def test_examples_directory_is_read_recursively(tmp_path: Path) -> None:
    """A directory means every *.yaml / *.yml below it: examples/ includes examples/invalid/
    (DESIGN §4), so validating it reports the invalid examples too."""
    every = [p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml")
             and not any(part.startswith(".") for part in p.relative_to(EXAMPLES).parts)]
    result = run_crctl("validate", EXAMPLES, cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    for path in INVALID_FILES:
        assert f"{path}:" in result.stderr, path.name
    assert result.stderr.splitlines()[-1].endswith(f" of {len(every)} file(s).")


def test_invalid_directory_reports_every_problem_of_every_file(tmp_path: Path) -> None:
    result = run_crctl("validate", INVALID, cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    for path in INVALID_FILES:
        for exp in expectations(path):
            assert any(exp.matches(str(path), line) for line in lines), f"{path.name}:{exp}"
    total = sum(len(expectations(p)) for p in INVALID_FILES)
    n = len(INVALID_FILES)
    assert lines[-1] == f"{total} problem(s) in {n} of {n} file(s).", lines[-1]


def _bad_account(name: str, problem: str) -> str:
    return (f"account: {name}\nusers:\n"
            + user_yaml("jdoe", extension="2101", roles="decision-maker")
            + problem)


def test_directory_reports_problems_of_all_files_in_one_run(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts"
    accounts.mkdir()
    (accounts / "alpha.yaml").write_text(_bad_account("alpha", (
        "  bob:\n    first_name: Bob\n    last_name: B\n    email: bob@example.com\n"
        '    extension: "2102"\n    profile: Gold\n')))
    (accounts / "beta.yml").write_text(_bad_account("beta", (
        "  carl:\n    first_name: Carl\n    last_name: C\n    email: carl@example.com\n"
        '    extension: "2101"\n    profile: Elite\n'
        "  dave:\n    first_name: Dave\n    last_name: D\n    email: dave@example.com\n"
        '    extension: "2104"\n    profile: Elite\n'
        "    call_recording:\n      product: always-off\n")))
    (accounts / "gamma.yaml").write_text(_bad_account("gamma", ""))  # valid
    (accounts / "README.md").write_text("not an account: [\n")  # ignored
    (accounts / "nested").mkdir()
    (accounts / "nested" / "delta.yaml").write_text("not: [valid\n")  # read: recursive
    (accounts / ".drafts").mkdir()
    (accounts / ".drafts" / "epsilon.yaml").write_text("not: [valid\n")  # hidden: skipped
    (accounts / ".zeta.yaml").write_text("not: [valid\n")  # hidden: skipped

    result = run_crctl("validate", "accounts", cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    err = result.stderr
    alpha = str(Path("accounts") / "alpha.yaml")
    beta = str(Path("accounts") / "beta.yml")
    assert f"{alpha}:15:14: error: users.bob.profile: 'Gold' is not one of" in err, err
    assert (f"{beta}:14:16: error: users.carl.extension: extension 2101 is already used by "
            "jdoe (line 7)") in err, err
    assert f"{beta}:23:16: error: users.dave.call_recording.product: 'always-off'" in err, err
    delta = str(Path("accounts") / "nested" / "delta.yaml")
    assert f"{delta}:2:1: error: document: YAML syntax error" in err, err
    assert "gamma" not in err and "README" not in err
    assert "epsilon" not in err and "zeta" not in err
    assert err.splitlines()[-1] == "4 problem(s) in 3 of 4 file(s).", err


def test_several_paths_are_all_checked(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(_bad_account("one", "") + "nmae: x\n")
    (tmp_path / "two.yaml").write_text(_bad_account("tow", ""))
    result = run_crctl("validate", "one.yaml", "two.yaml", INVALID / "empty.yaml",
                       cwd=tmp_path)
    assert result.returncode == 1
    assert "one.yaml:10:1: error: nmae: unknown key 'nmae' (did you mean 'name'?)" \
        in result.stderr
    assert ("two.yaml:1:10: error: account: account 'tow' must equal the file name's stem "
            "'two'") in result.stderr
    assert f"{INVALID / 'empty.yaml'}:2:1: error: document: file is empty" in result.stderr
    assert result.stderr.splitlines()[-1] == "3 problem(s) in 3 of 3 file(s)."


def test_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = run_crctl("validate", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "nope.yaml:1:1: error: document: cannot read file" in result.stderr


def test_directory_without_yaml_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty-dir").mkdir()
    result = run_crctl("validate", "empty-dir", cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "no *.yaml or *.yml files in empty-dir" in result.stderr
