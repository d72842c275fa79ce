"""Hostile input: files and values people wrote by hand, or wrote to do harm.

The rule (DESIGN section 8): bad input ends with one clear line and exit status 2, never a
traceback, never a hang. The parsers are tested in this process with hypothesis (bounded
examples: malformed schedule files and experiment specs of every shape -- wrong types, NaN,
huge numbers, unicode, truncated JSON, YAML tags and aliases, deep nesting, binary garbage);
CLI values through :func:`midl_autok.cli.main` in this process; a few representative files
through the real command in a subprocess. Also here: no unsafe deserializer in the package
(an AST audit), and files written atomically.
"""

from __future__ import annotations

import ast
import errno
import json
import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from clikit import in_process, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import midl_autok
from midl_autok._yaml import MAX_VALUES
from midl_autok.errors import ScheduleError, SpecError, UserError
from midl_autok.schedule import _MAX_FILE_BYTES, _MAX_YAML_BYTES, KSchedule, write_atomic
from midl_autok.spec import ExperimentSpec, load_spec, validate_spec

PACKAGE = Path(midl_autok.__file__).parent
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- strategies

# Numbers a hand-written file can hold: NaN, infinities, huge and tiny, negative, floats
# where integers belong, booleans (YAML's yes/no), integers past 64 bits.
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 10**30, -(10**30), 1e308, 5e-324, 0.5, True, False]),
)
texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\n", "\x00", "body.0", "ünïcødé", "\u202e", "🧪" * 5, "a" * 600]),
)
scalars = st.one_of(st.none(), numbers, texts)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


def schedule_doc() -> dict[str, Any]:
    return KSchedule(
        layers=(("body.0", 8), ("body.1", 4)),
        epochs=3,
        k=((8, 6, 2), (4, 4, 1)),
        arch="mlp",
        metrics={"val_accuracy": 0.5},
        provenance={"seed": 0},
    ).to_dict()


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (dict keys and list indices) into ``doc``, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += paths_of(value, (*prefix, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return copy


def mutated(doc: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.sampled_from(paths_of(doc)), json_like).map(
        lambda pv: replaced(doc, pv[0], pv[1])
    )


def one_clean_line(exc: BaseException) -> None:
    """The message the CLI prints: one line once whitespace is folded, not empty."""
    text = " ".join(str(exc).split())
    assert text, repr(exc)
    assert "Traceback" not in text


def accepts_or_refuses(parse: Callable[[], Any], error: type[UserError]) -> Any:
    """``parse()`` returns a value or raises ``error``; anything else is a bug."""
    try:
        return parse()
    except error as exc:
        one_clean_line(exc)
        return None


# --------------------------------------------------------------------------- schedules


@EXAMPLES
@given(json_like)
def test_any_schedule_document_is_read_or_refused(doc: Any) -> None:
    accepts_or_refuses(lambda: KSchedule.from_dict(doc), ScheduleError)


@EXAMPLES
@given(mutated(schedule_doc()))
def test_a_damaged_schedule_is_refused_or_round_trips(doc: Any) -> None:
    """One field of a valid schedule replaced by anything: refused, or it loads and then
    saves and loads again to the same schedule (JSON and YAML)."""
    schedule = accepts_or_refuses(lambda: KSchedule.from_dict(doc), ScheduleError)
    if schedule is not None:
        assert KSchedule.from_json(schedule.to_json()) == schedule
        assert KSchedule.from_yaml(schedule.to_yaml()) == schedule


@EXAMPLES
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_text_is_read_or_refused_as_json_and_yaml(text: str) -> None:
    accepts_or_refuses(lambda: KSchedule.from_json(text), ScheduleError)
    accepts_or_refuses(lambda: KSchedule.from_yaml(text), ScheduleError)


@EXAMPLES
@given(st.data())
def test_truncated_schedule_files_are_refused(data: st.DataObject) -> None:
    text = KSchedule.from_dict(schedule_doc()).to_json()
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 3))
    with pytest.raises(ScheduleError, match=r"^s\.json: not valid JSON"):
        KSchedule.from_json(text[:cut], source="s.json")


@EXAMPLES
@given(
    st.sampled_from(["metrics", "provenance"]),
    st.sampled_from(
        [
            "2024-01-01",  # a date
            "2024-01-01 10:00:00",  # a timestamp
            "!!binary aGVsbG8=",  # bytes
            ".nan",
            "-.inf",
            "{1: 2}",  # a key that is not a string
            "{a: [1, .inf]}",
            "!!set {a, b}",
        ]
    ),
)
def test_yaml_only_values_in_metrics_and_provenance_are_refused(key: str, value: str) -> None:
    """YAML holds more than JSON; a schedule that loads must also save (it used to load and
    then crash in to_json with a TypeError or ValueError)."""
    text = KSchedule.from_dict(schedule_doc()).to_yaml()
    text = re.sub(rf"^{key}:.*$", f"{key}: {{x: {value}}}", text, flags=re.M)
    with pytest.raises(ScheduleError, match=rf"^s\.yaml: {key}\.x"):
        KSchedule.from_yaml(text, source="s.yaml")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param(
            "!!python/object/apply:os.system ['echo pwned']", "not valid YAML", id="apply"
        ),
        pytest.param("!!python/name:os.system", "not valid YAML", id="name"),
        pytest.param("!!python/module:os", "not valid YAML", id="module"),
        pytest.param("k: !!python/tuple [1, 2]", "not valid YAML", id="tuple"),
        pytest.param("a: &a [*a]", "the document refers to itself", id="self-reference"),
        pytest.param("[" * 100_000, "not valid YAML|nested too deeply", id="deep-flow"),
        pytest.param("- " * 50_000 + "1", "not valid YAML|nested too deeply", id="deep-block"),
        pytest.param("epochs: " + "9" * 5000, "not valid YAML", id="huge-int"),
        pytest.param("\x00\x01\x02", "not valid YAML", id="control"),
        pytest.param("\ufeff{format: 1", "not valid YAML", id="bom-truncated"),
    ],
)
def test_hostile_yaml_schedules(text: str, match: str) -> None:
    with pytest.raises(ScheduleError, match=rf"^s\.yaml: ({match})"):
        KSchedule.from_yaml(text, source="s.yaml")


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """The "billion laughs" document: ``width ** levels`` values from a few hundred bytes."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
def test_yaml_alias_bombs_are_refused_before_anything_walks_them() -> None:
    bomb = alias_bomb()  # 10 ** 9 values
    assert len(bomb) < 1000
    with pytest.raises(ScheduleError, match=f"more than {MAX_VALUES:,} values"):
        KSchedule.from_yaml(bomb, source="s.yaml")
    # an alias that does not multiply the data is fine
    text = KSchedule.from_dict(schedule_doc()).to_yaml()
    text = re.sub(r"^provenance:.*$", "provenance: {x: &x [1, 2], y: [*x, *x]}", text, flags=re.M)
    assert KSchedule.from_yaml(text).provenance == {"x": [1, 2], "y": [[1, 2], [1, 2]]}


def test_a_yaml_tag_never_runs_code(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "s.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {sentinel}']\n")
    with pytest.raises(ScheduleError, match="not valid YAML"):
        KSchedule.load(path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("s.json", b"\x89PNG\r\n\x1a\n\x00\x00garbage", "not a UTF-8 text file"),
        ("s.yaml", bytes(range(256)), "not a UTF-8 text file"),
        ("s.json", b"\xef\xbb\xbf{}", "not valid JSON"),  # BOM + an empty object
        ("s.json", b"", "not valid JSON"),
        ("s.yml", b"", "expected a JSON object at the top level, got null"),
    ],
)
def test_binary_and_empty_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ScheduleError, match=match):
        KSchedule.load(path)


@pytest.mark.parametrize(
    ("name", "limit"), [("big.json", _MAX_FILE_BYTES), ("big.yaml", _MAX_YAML_BYTES)]
)
def test_huge_files_are_refused_unread(tmp_path: Path, name: str, limit: int) -> None:
    path = tmp_path / name
    with path.open("wb") as fh:
        fh.truncate(limit + 1)  # sparse: nothing is written
    with pytest.raises(ScheduleError, match=f"file is larger than {limit} bytes"):
        KSchedule.load(path)


def nested(levels: int) -> Any:
    """``{"a": {"a": ... {}}}`` ``levels`` deep."""
    doc: dict[str, Any] = {}
    for _ in range(levels):
        doc = {"a": doc}
    return doc


def make_zero_device(path: Path) -> Path:
    """A character device like /dev/zero (endless zeros), made in tmp_path."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    return path


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["s.json", "s.yaml"])
def test_schedule_files_must_be_regular_files(tmp_path: Path, name: str) -> None:
    """A FIFO (which hung forever) or an endless device (read until memory ran out): one line."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with pytest.raises(
        ScheduleError,
        match=r"s\.(json|yaml) is a FIFO \(named pipe\), not a regular file; give the path",
    ):
        KSchedule.load(fifo)
    zero = make_zero_device(tmp_path / f"zero-{name}")
    with pytest.raises(ScheduleError, match=r"is a character device, not a regular file"):
        KSchedule.load(zero)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_deeply_nested_schedule_fields_are_one_line(tmp_path: Path, fmt: str) -> None:
    """300 levels in provenance used to load, then fail in a serializer with a traceback."""
    doc = schedule_doc()
    doc["provenance"] = {"spec": nested(300)}
    path = tmp_path / f"s.{fmt}"
    path.write_text(json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc))
    with pytest.raises(ScheduleError, match=r"provenance is nested more than 64 levels deep"):
        KSchedule.load(path)
    doc["provenance"] = {"spec": nested(60)}  # deep, but within the bound: round trips
    schedule = KSchedule.from_dict(doc)
    assert KSchedule.from_json(schedule.to_json()) == schedule


@pytest.mark.timeout(60)
def test_json_edge_cases() -> None:
    base = schedule_doc()
    for text, match in [
        ('{"epochs": ' + "9" * 5000 + "}", "not valid JSON"),  # past Python's int limit
        ("[" * 200_000, "not valid JSON"),
        (json.dumps(base).replace('"epochs": 3', '"epochs": NaN'), "not valid JSON"),
        (json.dumps(base).replace('"epochs": 3', '"epochs": 1e999'), "epochs must be an integer"),
        (json.dumps(base).replace('"epochs": 3', '"epochs": 3.0'), "epochs must be an integer"),
        (json.dumps({**base, "epochs": 10**30}), "must have 1000000000000000000000000000000"),
    ]:
        with pytest.raises(ScheduleError, match=match):
            KSchedule.from_json(text)


# --------------------------------------------------------------------------- experiment specs


@EXAMPLES
@given(json_like)
def test_any_spec_document_is_validated_or_refused(doc: Any) -> None:
    accepts_or_refuses(lambda: validate_spec(doc), SpecError)


SHIPPED = load_spec("synthetic-mlp").model_dump(mode="json")


@EXAMPLES
@given(mutated(SHIPPED))
def test_a_damaged_spec_is_refused_or_usable(doc: Any) -> None:
    """One field of a shipped spec replaced by anything: refused, or a spec that dumps to
    JSON and YAML and reads back the same."""
    spec = accepts_or_refuses(lambda: validate_spec(doc), SpecError)
    if spec is not None:
        assert validate_spec(yaml.safe_load(spec.to_yaml())) == spec
        json.dumps(spec.model_dump(mode="json"))


@EXAMPLES
@given(
    st.sampled_from(
        [
            "seed",
            "training.epochs",
            "training.lr",
            "training.batch_size",
            "model.hidden",
            "model.gate_rank",
            "budget.trials",
            "budget.flops_budget",
            "dataset.options",
            "name",
        ]
    ),
    json_like,
)
def test_overrides_with_any_value(path: str, value: Any) -> None:
    base = ExperimentSpec.model_validate(SHIPPED)
    accepts_or_refuses(lambda: base.override(**{path: value}), SpecError)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("model.hidden", [10**30], r"model\.hidden: .*integers in \[1, 1048576\]"),
        ("model.hidden", [1] * 2000, r"model\.hidden: List should have at most 1024 items"),
        ("model.gate_rank", 10**30, r"model\.gate_rank: must be an integer in \[1, 1048576\]"),
        ("training.batch_size", 10**30, r"training\.batch_size: Input should be less than"),
        ("training.lr", math.nan, r"training\.lr: "),
        ("name", "two\nlines", r"name: must not contain control characters"),
        ("name", "x" * 101, r"name: String should have at most 100 characters"),
        (
            "model.hidden",
            [1048576, 1048576],
            r"model\.hidden: the layers \[1048576, 1048576\] hold 1,099,511,627,776 weights, "
            r"more than the limit of 1,000,000,000 \(midl_autok\.spec\.MAX_WEIGHTS\)",
        ),
        ("model.channels", [30000, 30000], r"model\.channels: .* more than the limit"),
        ("model.hidden_size", 1 << 20, r"model: the LSTM gates of hidden_size 1048576"),
        ("training.epochs", True, r"training\.epochs: a boolean is not accepted"),
        ("training.epochs", 3.0, r"training\.epochs: Input should be a valid integer"),
        ("training.lr", True, r"training\.lr: a boolean is not accepted"),
        ("seed", False, r"seed: a boolean is not accepted"),
        ("budget.trials", "5", r"budget\.trials: Input should be a valid integer"),
        ("model.hidden", [True, 8], r"model\.hidden\.0: Input should be a valid integer"),
        ("dataset.options", nested(300), r"dataset\.options is nested more than 32 levels"),
        ("search.options", nested(40), r"search\.options is nested more than 32 levels"),
    ],
)
def test_huge_and_hostile_spec_values(path: str, value: Any, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ExperimentSpec.model_validate(SHIPPED).override(**{path: value})


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
        ("name: !!python/name:os.system\n", "not valid YAML"),
        (
            "search:\n  options:\n"
            + "".join(f"    {line}\n" for line in alias_bomb().splitlines()),
            "the document holds more than",
        ),
        ("a: &a {b: *a}\n", "the document refers to itself"),
        ("seed: " + "1" * 5000 + "\n", "not valid YAML"),
        ("training: {epochs: 1e400}\n", r"training\.epochs"),
        ("name: 2024-01-01\n", r"name: Input should be a valid string"),
        ("[" * 100_000, "not valid YAML|nested too deeply"),
        ("\x00", "not valid YAML"),
        ("training:\n  epochs: 3\n  epochs: 4\n  epocs: 5\n", r"training\.epocs: Extra inputs"),
    ],
)
def test_hostile_spec_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=rf"exp\.yaml: ({match})"):
        load_spec(path)


def test_spec_files_binary_huge_and_special(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SpecError, match="not a UTF-8 text file"):
        load_spec(binary)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as fh:
        fh.truncate(2 * 1024 * 1024)
    with pytest.raises(SpecError, match="larger than"):
        load_spec(huge)
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
    assert load_spec(_write(tmp_path / "empty.yaml", "")).name == "custom"  # all defaults


@pytest.mark.timeout(20)
def test_spec_files_must_be_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match=r"exp\.yaml is a FIFO \(named pipe\), not a regular file"):
        load_spec(fifo)
    zero = make_zero_device(tmp_path / "zero.yaml")
    with pytest.raises(SpecError, match=r"zero\.yaml is a character device, not a regular file"):
        load_spec(zero)


def test_a_spec_nested_300_deep_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "exp.yaml", yaml.safe_dump({"dataset": {"options": nested(300)}}))
    with pytest.raises(SpecError, match=r"exp\.yaml: dataset\.options is nested more than 32"):
        load_spec(path)
    ok = {"dataset": {"name": "synthetic", "options": {"a": nested(20)}}}
    assert (
        load_spec(_write(tmp_path / "ok.yaml", yaml.safe_dump(ok))).dataset.options
        == ok["dataset"]["options"]
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- CLI values


def assert_one_line_exit_2(code: int, stderr: str, pattern: str = "") -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("midl-autok: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


BAD_FLOATS = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-0", "0", "1.0000001", "2", "-1"]),
    st.sampled_from(["", " ", "0x1p-3", "½", "1,5", "one", "\x7f", "1e", "--1", "1" * 5000]),
    st.floats(max_value=0.0).map(repr),
    st.floats(min_value=1.0, exclude_min=True).map(repr),
)
# invalid for --epochs, --seed and --trials alike
BAD_INTS = st.one_of(
    st.sampled_from(["-1", "1.5", "1e3", "", "ten", "1" * 5000, str(10**30), "½", "0x10"]),
    st.integers(max_value=-1).map(str),
    st.integers(min_value=2**32).map(str),
)
NO_STORE = "/dev/null/store"  # can never be created: nothing is written by these tests


@settings(EXAMPLES, max_examples=40)
@given(BAD_FLOATS)
def test_train_k_fraction_values(value: str) -> None:
    code, _, err = in_process("train", "synthetic-mlp", "--epochs", "1", "--k-fraction", value)
    assert_one_line_exit_2(code, err, r"--k-fraction")


@settings(EXAMPLES, max_examples=40)
@given(st.sampled_from(["--epochs", "--seed", "--trials", "--gate-rank", "--light-rank"]), BAD_INTS)
def test_search_integer_values(flag: str, value: str) -> None:
    code, _, err = in_process("search", "synthetic-mlp", flag, value, "--store", NO_STORE)
    names = "|training.epochs|seed|budget.trials|model.gate_rank|model.light_rank"
    assert_one_line_exit_2(code, err, re.escape(flag) + names)


@settings(EXAMPLES, max_examples=30)
@given(BAD_FLOATS)
def test_search_flops_budget_values(value: str) -> None:
    code, _, err = in_process(
        "search", "synthetic-mlp", "--flops-budget", value, "--store", NO_STORE
    )
    assert_one_line_exit_2(code, err, r"--flops-budget")


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["search", "--epochs", str(10**30)], r"training\.epochs: Input should be less than"),
        (["search", "--seed", "-1"], r"Invalid value for '--seed'"),
        (["search", "--seed", str(2**32)], r"seed: Input should be less than or equal"),
        (["search", "--trials", str(10**30)], r"budget\.trials"),
        (["train", "--k-fraction", "nan"], r"--k-fraction must satisfy 0 < F <= 1, but got nan"),
        (["train", "--dataset", "ünïcødé"], r"unknown dataset 'ünïcødé'"),
        (["train", "--dataset", "a\u202eb"], r"unknown dataset"),
        (["search", "--agent", "🧪"], r"unknown agent '🧪'"),
        (["search", "--space", ""], r"unknown search space ''"),
        (["train", "/nonexistent/ünï.yaml"], r"experiment file not found"),
        (["train", "--schedule", "/nonexistent/s.json"], r"schedule file not found"),
        (["pareto", "--store", "/dev/null"], r"no search results in /dev/null"),
        (["search", "--storage", "not a url"], r"--storage must be a URL"),
    ],
)
def test_hostile_cli_values(argv: list[str], pattern: str) -> None:
    code, _, err = in_process(*argv)
    assert_one_line_exit_2(code, err, pattern)


# ------------------------------------------------------------------- the real command


def test_hostile_files_through_the_real_command(tmp_path: Path) -> None:
    """A few representative files through `midl-autok` itself: one line, exit 2, and the
    YAML tag never ran its command."""
    sentinel = tmp_path / "pwned"
    tagged = _write(
        tmp_path / "exp.yaml", f"!!python/object/apply:os.system ['touch {sentinel}']\n"
    )
    bomb = _write(tmp_path / "bomb.yaml", alias_bomb())
    text = KSchedule.from_dict(schedule_doc()).to_yaml()
    text = re.sub(r"^metrics:.*$", "metrics: {when: 2024-01-01}", text, flags=re.M)
    schedule = _write(tmp_path / "s.yaml", text)
    store_file = _write(tmp_path / "file", "")
    for args, pattern in [
        (["search", str(tagged)], r"exp\.yaml: not valid YAML"),
        (["train", "--schedule", str(bomb), "synthetic-mlp"], r"more than 2,000,000 values"),
        (["train", "--schedule", str(schedule), "synthetic-mlp"], r"metrics\.when must be a JSON"),
        (
            ["search", "synthetic-mlp", "--store", str(store_file / "sub"), "--trials", "1"],
            r"cannot write to the store .*: Not a directory",
        ),
    ]:
        proc = run_cli(*args, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert_one_line_exit_2(proc.returncode, proc.stderr, pattern)
    assert not sentinel.exists()


def test_hostile_input_of_the_hardening_issue_through_the_real_command(tmp_path: Path) -> None:
    """Issue 17, points 1-3 and 7, through `midl-autok` itself: one line, exit status 2 (a
    full device: 1, the machine's failure), and no device or FIFO replaced."""
    fifo = tmp_path / "s.json"
    os.mkfifo(fifo)
    deep = _write(tmp_path / "deep.yaml", yaml.safe_dump({"search": {"options": nested(300)}}))
    wide = _write(tmp_path / "wide.yaml", "model: {hidden: [1048576, 1048576]}\n")
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (mnist / f"{name}-ubyte").write_bytes(bytes([0, 0, 8, 65]) + bytes(4 * 65))
    for args, pattern in [
        (["train", "--schedule", str(fifo), "synthetic-mlp"], r"s\.json is a FIFO"),
        (["search", str(deep), "--store", NO_STORE], r"deep\.yaml: search\.options is nested"),
        (["train", str(wide)], r"wide\.yaml: model\.hidden: .* more than the limit"),
        (
            ["train", "--dataset", "mnist", "--data-path", str(mnist), "synthetic-mlp"],
            r"declares 65 dimensions",
        ),
    ]:
        proc = run_cli(*args, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert_one_line_exit_2(proc.returncode, proc.stderr, pattern)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.slow
def test_train_saves_into_devices_without_replacing_them(tmp_path: Path) -> None:
    """`--save-schedule` onto a null device discards (exit 0), onto a full one fails with one
    line (exit 1); both stay devices."""
    null, full = tmp_path / "null", tmp_path / "full"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    base = ["train", "synthetic-mlp", "--epochs", "1", "--save-schedule"]
    ok = run_cli(*base, str(null), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    failed = run_cli(*base, str(full), cwd=tmp_path)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1, failed.stderr
    assert lines == [lines[0]] and lines[0].startswith("midl-autok: error: no space left"), lines
    assert f"({full})" in lines[0]
    assert stat.S_ISCHR(null.stat().st_mode) and stat.S_ISCHR(full.stat().st_mode)


# --------------------------------------------------------------------------- deserializers

# Calls that can run code from a file. ``torch.load`` is allowed with weights_only=True,
# ``np.load`` with allow_pickle=False; everything else here is refused outright.
_UNSAFE = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "yaml.load",
    "yaml.load_all",
    "yaml.unsafe_load",
    "yaml.full_load",
    "yaml.Loader",
    "yaml.UnsafeLoader",
    "yaml.FullLoader",
    "torch.jit.load",
    "torch.export.load",
    "pd.read_pickle",
    "pandas.read_pickle",
}
# The reviewed exceptions: (file, call) -> why it is safe.
_ALLOWED = {
    ("data/cifar.py", "pickle.Unpickler"): "CIFAR batches: _SafeUnpickler.find_class allow-lists "
    "numpy array reconstruction only; any other global is refused",
    ("deploy.py", "torch.export.load"): "load_program only, which refuses unless called with "
    "trusted=True (a file you wrote); load_model reads the weights with weights_only=True",
    ("deploy.py", "torch.jit.load"): "load_program only (trusted=True), as above",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "?"
    return None


def unsafe_calls(path: Path) -> list[tuple[str, int, str]]:
    """(call, line, why) for every unsafe deserializer used in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}  # from pickle import load as x -> x: pickle.load
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
    found = []
    for node in ast.walk(tree):
        refs: list[tuple[str, ast.AST]] = []
        if isinstance(node, ast.Call):
            refs.append((_dotted(node.func), node))
        if isinstance(node, ast.ClassDef):
            refs += [(_dotted(base), node) for base in node.bases]
        if isinstance(node, ast.keyword) and node.arg == "Loader":
            refs.append((_dotted(node.value), node))
        for name, where in refs:
            head, _, rest = name.partition(".")
            full = aliases.get(head, head) + (f".{rest}" if rest else "")
            full = full.replace("numpy.", "np.")
            line = getattr(where, "lineno", 0)
            if full in _UNSAFE:
                found.append((full, line, "can run code from the file"))
            elif full == "torch.load" and isinstance(where, ast.Call):
                if _keyword(where, "weights_only") is not True:
                    found.append((full, line, "needs weights_only=True"))
            elif full == "np.load" and isinstance(where, ast.Call):
                if _keyword(where, "allow_pickle") not in (None, False):
                    found.append((full, line, "needs allow_pickle=False"))
            elif full in ("eval", "exec") and isinstance(where, ast.Call):
                found.append((full, line, "evaluates text as code"))
    return found


def test_the_audit_finds_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle, torch, yaml\nimport numpy as np\nfrom pickle import loads as l\n"
        "pickle.load(f)\nl(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=True)\nnp.load(p)\n"
        "yaml.load(t, Loader=yaml.Loader)\nyaml.safe_load(t)\neval('1')\nmodel.eval()\n"
        "class U(pickle.Unpickler): pass\n"
    )
    found = sorted((call, line) for call, line, _ in unsafe_calls(sample))
    assert found == [
        ("eval", 13),
        ("np.load", 9),
        ("pickle.Unpickler", 15),
        ("pickle.load", 4),
        ("pickle.loads", 5),
        ("torch.load", 6),
        ("torch.load", 7),
        ("yaml.Loader", 11),
        ("yaml.load", 11),
    ]


def test_no_unsafe_deserializer_in_the_package() -> None:
    """No pickle, no ``torch.load`` without ``weights_only=True``, no unsafe YAML loader
    anywhere in midl_autok/, except the reviewed calls in _ALLOWED."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for call, line, why in unsafe_calls(path):
            if (rel, call) in _ALLOWED:
                continue
            problems.append(f"{rel}:{line}: {call} ({why})")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- atomic writes


def test_write_atomic_uses_a_temp_file_in_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "s.json"
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: Any) -> None:
        seen.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(target, "new\n")
    ((src, dst),) = seen
    assert Path(src).parent == target.parent  # same file system: the rename is atomic
    assert Path(dst) == target
    assert target.read_text() == "new\n"


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    target = tmp_path / "s.json"
    target.write_text("old\n")

    def disk_full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, fail_at, disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "new\n" * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left


def test_a_schedule_that_cannot_be_serialized_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    good = KSchedule.from_dict(schedule_doc())
    good.save(target)
    before = target.read_bytes()
    broken = good.with_info(metrics={"val_accuracy": math.nan})  # built in code, not read
    with pytest.raises(ValueError, match="Out of range float"):
        broken.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
