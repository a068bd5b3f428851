import pytest

from tracker.fmt import human_bytes
from tracker.policy.names import (
    ParsedName,
    checkpoint_name,
    final_model_of,
    final_name,
    is_final_model_name,
    parse_checkpoint_name,
)


@pytest.mark.parametrize(
    ("model", "epoch", "name"),
    [
        ("mammals", 0, "mammals_epoch0000.pth"),
        ("mammals", 7, "mammals_epoch0007.pth"),
        ("mammals", 9999, "mammals_epoch9999.pth"),
        ("mammals", 12345, "mammals_epoch12345.pth"),  # grows past 4 digits
        ("my model_v2", 3, "my model_v2_epoch0003.pth"),
        ("poincaré.v1", 41, "poincaré.v1_epoch0041.pth"),
    ],
)
def test_checkpoint_name(model, epoch, name):
    assert checkpoint_name(model, epoch) == name
    assert parse_checkpoint_name(name) == ParsedName(model, epoch, "epoch")


def test_padded_names_sort_as_text_in_epoch_order():
    # MLflow's artifact browser sorts by name text; 4 digits keep 0..9999 in order
    names = [checkpoint_name("m", e) for e in (0, 1, 2, 9, 10, 11, 100, 999, 1000, 9999)]
    assert sorted(names) == names


@pytest.mark.parametrize(
    ("model", "epoch"),
    [
        ("", 1),
        ("   ", 1),
        ("a/b", 1),
        ("a\\b", 1),
        ("..", 1),
        ("a..b", 1),
        ("line\nbreak", 1),
        ("m", -1),
        ("m", 1.0),
        ("m", True),
        ("m", "3"),
    ],
)
def test_checkpoint_name_rejects(model, epoch):
    with pytest.raises(ValueError):
        checkpoint_name(model, epoch)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mammals_epoch0003.pth", ("mammals", 3, "epoch")),
        ("mammals_epoch3.pth", ("mammals", 3, "epoch")),
        ("mammals_epoch00000.pth", ("mammals", 0, "epoch")),
        ("mammals.pth.3", ("mammals", 3, "poincare")),
        ("mammals.pth.0012", ("mammals", 12, "poincare")),
        ("my model_v2_epoch3.pth", ("my model_v2", 3, "epoch")),
        ("a_epoch1_epoch2.pth", ("a_epoch1", 2, "epoch")),  # the last _epoch<N> is the epoch
        ("a.b.c_epoch5.pth", ("a.b.c", 5, "epoch")),
        ("日本語 モデル_epoch0008.pth", ("日本語 モデル", 8, "epoch")),
        ("x.pth.pth.4", ("x.pth", 4, "poincare")),
        ("x_epoch3.pth.4", ("x_epoch3", 4, "poincare")),
        (".hidden_epoch1.pth", (".hidden", 1, "epoch")),
        (
            "m_epoch123456789012345678901234567890.pth",
            ("m", 123456789012345678901234567890, "epoch"),
        ),
    ],
)
def test_parse_recognises(name, expected):
    assert parse_checkpoint_name(name) == ParsedName(*expected)


@pytest.mark.parametrize(
    "name",
    [
        "x_epoch3.pth.tmp",
        "notes_epoch3.txt",
        "model.pth",  # the final model
        "model",
        "",
        "_epoch3.pth",  # empty model name
        " _epoch3.pth",  # blank model name
        ".pth.3",
        "m_epoch.pth",
        "m_epochx.pth",
        "m_epoch-3.pth",
        "m_epoch3.PTH",
        "m_epoch 3.pth",
        "m_epoch3.pth ",
        "m_epoch3.pth\n",
        "m.pth.3\n",
        "m.pth.",
        "m.pth.3a",
        "m_epoch٣.pth",  # Arabic-Indic digit: int() would take it, we never write it
        "m.pth.٣",
        "dir/m_epoch3.pth",
        "dir\\m_epoch3.pth",
        "../m_epoch3.pth",
        "..\\m_epoch3.pth",
        ".._epoch3.pth",
        "a..b_epoch3.pth",
        "m\x00_epoch3.pth",
        "m\n_epoch3.pth",
        "m_epoch3.pth.3.tmp",
        None,
        b"m_epoch3.pth",
    ],
)
def test_parse_rejects(name):
    assert parse_checkpoint_name(name) is None


@pytest.mark.parametrize(
    ("name", "final"),
    [
        ("model.pth", True),
        ("my model v2.pth", True),
        ("poincaré.pth", True),
        ("model_epoch3.pth", False),  # a checkpoint, not a final model
        ("model.pth.3", False),
        (".pth", False),
        ("_epoch3.pth", False),  # not final (final_name refuses "_epoch3"), not a checkpoint
        ("../model.pth", False),
        ("model.pth.tmp", False),
        ("model.PTH", False),
        ("", False),
        (None, False),
    ],
)
def test_is_final_model_name(name, final):
    assert is_final_model_name(name) is final


def test_final_name_round_trip():
    assert final_name("my model_v2") == "my model_v2.pth"
    assert is_final_model_name(final_name("my model_v2"))
    assert final_model_of("my model_v2.pth") == "my model_v2"
    assert final_model_of("m_epoch3.pth") is None


def test_final_name_refuses_a_name_that_reads_as_a_checkpoint():
    # "m_epoch3.pth" is checkpoint 3 of "m": a final model by that name would be rotated away
    with pytest.raises(ValueError, match="m_epoch3"):
        final_name("m_epoch3")


@pytest.mark.parametrize("model", ["a", "my model_v2", "x.pth", "ünï cödé", "m_epoch3x"])
@pytest.mark.parametrize("epoch", [0, 1, 10, 9999, 10000])
def test_round_trip(model, epoch):
    parsed = parse_checkpoint_name(checkpoint_name(model, epoch))
    assert parsed == ParsedName(model, epoch, "epoch")
    assert not is_final_model_name(checkpoint_name(model, epoch))


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "unknown size"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (1536, "1.5 KB"),
        (10 * 1024 - 40, "10 KB"),  # 9.96 KB: no "10.0"
        (80_896, "79 KB"),
        (1024**2 - 1, "1.0 MB"),  # would be "1024 KB"
        (1_258_291, "1.2 MB"),
        (5 * 1024**3, "5.0 GB"),
        (3 * 1024**4, "3.0 TB"),
    ],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize("n", [-1, 1.5, True, "3"])
def test_human_bytes_rejects(n):
    with pytest.raises(ValueError):
        human_bytes(n)
