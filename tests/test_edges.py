"""No traceback at any edge: each odd input or broken machine ends as a sentence saying what is wrong and what to do.

The CLI exits 2 with `error: <sentence>` and no traceback; a page shows the sentence with st.error and no exception.
"""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_cli import core_cli

from core.config import MAX_SEED, RunConfig
from core.errors import UserError

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 90


def assert_refused(result, *sentence_parts: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for part in sentence_parts:
        assert part in result.stderr, result.stderr


# 1. A workspace that cannot be written


def test_train_page_says_the_workspace_cannot_be_written(tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(blocked))  # a file where the folder should be: root cannot write it either
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/views/train.py").run()
    assert not app.exception, [e.message for e in app.exception]
    errors = [e.value for e in app.error]
    assert any(f"The workspace folder {blocked} is not writable" in e and "WORKBENCH_WORKSPACE" in e for e in errors), errors


def test_a_workspace_folder_blocked_by_a_file_is_a_sentence(workspace):
    from core.workspace import datasets_dir

    workspace.mkdir(parents=True)
    (workspace / "datasets").write_text("in the way", encoding="utf-8")
    with pytest.raises(UserError, match=r"The workspace folder .*datasets cannot be made .*Move whatever is in its way"):
        datasets_dir()


# 3. A config that is not a text YAML file


def test_train_with_a_binary_file_or_a_folder_as_the_config_exits_2(workspace, tmp_path):
    binary = tmp_path / "program"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_refused(core_cli("train", str(binary), workspace=workspace), f"{binary} is not a text YAML file")
    assert_refused(core_cli("train", str(tmp_path), workspace=workspace), f"{tmp_path} is a folder, not a config file")


def test_an_unreadable_config_is_a_sentence(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("name: x\n", encoding="utf-8")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)  # chmod 000 does not stop root, who runs these tests here
    with pytest.raises(UserError, match=r"The config file .*run.yaml cannot be read \(Permission denied\); fix its permissions"):
        RunConfig.load(path)


# 7. A seed the trainer could not use


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 10**12])
def test_a_seed_outside_0_to_2_32_is_refused_in_validate(seed):
    problems = RunConfig(seed=seed).validate()
    assert f"The seed must be a whole number from 0 to 4294967295 (got {seed}); any number in that range repeats a run exactly." in problems


def test_the_largest_seed_is_accepted():
    assert not [problem for problem in RunConfig(seed=MAX_SEED).validate() if "seed" in problem]
