"""No traceback at any edge: each odd input or broken machine ends as a sentence saying what is wrong and what to do.

The CLI exits 2 with `error: <sentence>` and no traceback; a page shows the sentence with st.error and no exception.
"""

import argparse
import json
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_cli import core_cli

from core import cli
from core.config import MAX_SEED, RunConfig
from core.errors import UserError
from core.store import RunStore

APP = str(Path(__file__).resolve().parents[2] / "app.py")
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


# 2. A local model folder whose config.json is broken or asks for remote code


def model_folder(root: Path, config_text: str) -> Path:
    """A folder with `config_text` as its config.json and Python files that leave a mark if anything imports them."""
    root.mkdir()
    (root / "config.json").write_text(config_text, encoding="utf-8")
    marker = root / "REMOTE-CODE-RAN"
    for module in ("configuration_custom", "modeling_custom"):
        (root / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    return root


REMOTE_CODE = json.dumps(
    {
        "model_type": "custom-x",
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModel": "modeling_custom.CustomModel",
            "AutoModelForSequenceClassification": "modeling_custom.CustomModel",
        },
    }
)


def run_yaml(tmp_path: Path, **values) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(RunConfig(**values).to_yaml(), encoding="utf-8")
    return path


def test_train_refuses_a_model_whose_config_is_not_json(workspace, tmp_path):
    folder = model_folder(tmp_path / "broken", '{"model_type": "bert",\n  "hidden_size": 32,,\n}')
    result = core_cli(
        "train", str(run_yaml(tmp_path, model=str(folder), dataset="planted-keywords")), "--detach", workspace=workspace
    )
    assert_refused(result, f"{folder / 'config.json'} is not valid JSON (line 2:", "save_pretrained")
    assert RunStore().list() == []


def test_train_refuses_a_model_that_needs_remote_code_without_running_it(workspace, tmp_path):
    folder = model_folder(tmp_path / "remote", REMOTE_CODE)
    result = core_cli(
        "train", str(run_yaml(tmp_path, model=str(folder), dataset="planted-keywords")), "--detach", workspace=workspace
    )
    assert_refused(result, "needs remote code (auto_map", "which the workbench does not run")
    assert not (folder / "REMOTE-CODE-RAN").exists()
    assert RunStore().list() == []


def test_every_task_refuses_remote_code_in_preflight(workspace, tmp_path):
    from core.tasks import TASKS

    folder = model_folder(tmp_path / "remote", REMOTE_CODE)
    for key, task in TASKS.items():
        config = RunConfig(task=key, model=str(folder), dataset=task.datasets()[0].key)
        with pytest.raises(UserError, match="needs remote code"):
            task.preflight(config)
    assert not (folder / "REMOTE-CODE-RAN").exists()


def test_train_page_shows_the_remote_code_refusal(workspace, tmp_path):
    folder = model_folder(tmp_path / "remote", REMOTE_CODE)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    app.switch_page("pages/views/train.py").run()
    app.radio(key="train_model_source").set_value("Local folder").run()
    app.text_input(key="train_model_text").set_value(str(folder)).run()
    app.button(key="train_start").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert any("needs remote code" in e.value for e in app.error), [e.value for e in app.error]
    assert not (folder / "REMOTE-CODE-RAN").exists()


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


# 4. Explanation parameters outside their documented range


def test_explain_refuses_an_out_of_range_parameter_before_loading_a_model(workspace):
    # No run is needed: the bound is checked before the run's model is looked up.
    result = core_cli("explain", "no-such-run", "--text", "a film", "--param", "steps=100000000", workspace=workspace)
    assert_refused(result, "'steps' must be at most 1000 (got 100000000); choose a value from 1 to 1000")
    result = core_cli(
        "explain", "no-such-run", "--image", "x.png", "--text", "a red circle", "--param", "steps=0", workspace=workspace
    )
    assert_refused(result, "'steps' must be at least 1 (got 0)")


def test_every_numeric_method_parameter_has_a_range_holding_its_default():
    from core.explain.methods import methods_for

    for modality in ("tokens", "patches", "pairs"):
        for method in methods_for(modality).values():
            for name, default in method.defaults.items():
                if isinstance(default, (int, float)) and not isinstance(default, bool):
                    low, high = method.bounds(name)
                    assert low <= default <= high, (modality, method.key, name)
                    with pytest.raises(UserError, match=f"'{name}' must be at most {high}"):
                        method.check_params({name: high * 10 + 1})


def test_method_parameter_inputs_stop_at_the_range():
    def script():
        from core.explain.methods import METHODS
        from pages import method_params

        method_params(METHODS["gradient_shap"], "edge")

    app = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not app.exception, [e.message for e in app.exception]
    inputs = {widget.key: widget for widget in app.number_input}
    assert (inputs["edge_n_samples"].min, inputs["edge_n_samples"].max) == (1, 2000)
    assert (inputs["edge_stdevs"].min, inputs["edge_stdevs"].max) == (0.0, 10.0)
    assert inputs["edge_seed"].max == 2**32 - 1


# 5. An export folder that cannot be made


def completed_run_with_a_model(run_id: str = "20990101-000000-done") -> str:
    """A run the store calls completed, with a final model folder: enough for export's checks, no training."""
    from core.checkpoints import FINAL_MODEL

    store = RunStore()
    store.create(run_id, name="done", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")
    store.update(run_id, status="completed")
    final = store.get(run_id).directory / FINAL_MODEL
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}", encoding="utf-8")
    return run_id


def test_export_to_a_folder_that_cannot_be_made_exits_2(workspace, tmp_path):
    run_id = completed_run_with_a_model()
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    result = core_cli("export", run_id, str(blocker / "out"), workspace=workspace)
    assert_refused(
        result, f"The export folder {blocker / 'out'} cannot be created or written", "choose a folder you can write to"
    )
    assert_refused(core_cli("export", run_id, str(blocker), workspace=workspace), f"{blocker} is a file, not a folder")


# 6. Run names that would forge terminal lines


def test_runs_escapes_control_characters_in_names(workspace):
    name = "evil\x1b[31m red\nfake-run   completed  100% cpu    forged \u202e é 日本 🙂"
    RunStore().create(
        "20990101-000000-abcd", name=name, task="text_classification", model="m", dataset="d", device="cpu", config_yaml=""
    )
    result = core_cli("runs", workspace=workspace)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines  # the header and the one run: the newline in the name did not add a line
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert lines[1].endswith("evil\\x1b[31m red\\nfake-run   completed  100% cpu    forged \\u202e é 日本 🙂")


# 7. A seed the trainer could not use


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 10**12])
def test_a_seed_outside_0_to_2_32_is_refused_in_validate(seed):
    problems = RunConfig(seed=seed).validate()
    assert (
        f"The seed must be a whole number from 0 to 4294967295 (got {seed}); any number in that range repeats a run exactly."
        in problems
    )


def test_the_largest_seed_is_accepted():
    assert not [problem for problem in RunConfig(seed=MAX_SEED).validate() if "seed" in problem]


# 8. The machine's own failures in any command


def test_a_broken_run_store_is_a_sentence_naming_the_log(tmp_path, monkeypatch, capsys):
    # Not the `workspace` fixture: its clean-up opens the store, which is broken here on purpose.
    workspace = tmp_path / "workspace"
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(workspace))
    workspace.mkdir()
    (workspace / "runs.db").write_bytes(b"this is not an SQLite file" * 200)
    assert cli.main(["runs"]) == 2
    error = capsys.readouterr().err
    log = workspace / cli.ERROR_LOG
    assert error.startswith("error: `runs` stopped on an unexpected error (DatabaseError: file is not a database)")
    assert f"the full traceback is in {log}" in error and "Traceback" not in error
    assert "Traceback" in log.read_text(encoding="utf-8") and "file is not a database" in log.read_text(encoding="utf-8")


def test_an_os_error_in_a_command_is_a_sentence(workspace, capsys):
    def full_disk(arguments):
        raise OSError(28, "No space left on device", str(workspace / "runs" / "x"))

    assert cli.run_command(argparse.Namespace(command="cancel", handler=full_disk)) == 2
    error = capsys.readouterr().err
    assert "stopped on an unexpected error (OSError: [Errno 28] No space left on device" in error
    assert str(workspace / cli.ERROR_LOG) in error


def test_a_bug_keeps_its_traceback(workspace):
    def bug(arguments):
        raise KeyError("a real bug")

    with pytest.raises(KeyError):
        cli.run_command(argparse.Namespace(command="runs", handler=bug))


def test_the_trainer_keeps_its_traceback_for_its_run_log(workspace):
    def read_only(arguments):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    with pytest.raises(sqlite3.OperationalError):
        cli.run_command(argparse.Namespace(command="worker", handler=read_only))


def test_ctrl_c_while_following_stops_following_not_the_run(workspace, capsys, monkeypatch):
    RunStore().create("r1", name="n", task="text_classification", model="m", dataset="d", device="cpu", config_yaml="")

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", interrupt)
    assert cli.follow("r1") == 130
    assert "stopped following run r1; it keeps going (`python -m core cancel r1` stops it)" in capsys.readouterr().err
    assert RunStore().get("r1").status == "queued"
