"""Optional features name the extra they need: the table matches pyproject.toml, and the command
prints a pip line instead of a traceback."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from imagine_edge import cli, extras

ROOT = Path(__file__).resolve().parents[2]


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


# Import names that differ from the distribution's.
_DISTRIBUTION = {"llama_cpp": "llama-cpp-python"}


def test_extra_modules_match_the_extras_in_pyproject() -> None:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra, modules in extras.EXTRA_MODULES.items():
        expected = {_DISTRIBUTION.get(m, m.replace("_", "-")) for m in modules}
        assert _requirement_names(optional[extra]) == expected


def test_a_module_is_traced_to_its_extra() -> None:
    assert extras.extra_of("torch.nn") == "prepare"
    assert extras.extra_of("llama_cpp") == "compare"
    assert extras.extra_of("matplotlib.pyplot") == "bench"
    assert extras.extra_of("numpy") is None
    assert extras.extra_of(None) is None


def test_installed_extras_are_not_reported_missing() -> None:
    # The development venv has every extra the table lists (make setup installs them).
    assert extras.missing_modules("prepare") == []
    assert extras.missing_modules("bench") == []


def test_a_missing_extra_prints_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(extras.EXTRA_MODULES, "bench", ("imagine_edge_no_such_module",))
    code = cli.main(["bench", "--type", "embedding", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "imagine-edge bench: imagine-edge bench (its PNG chart) needs the 'bench' extra" in err
    assert "pip install 'imagine-edge[bench]'" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was measured or written


def test_the_error_is_an_import_error_naming_the_module() -> None:
    error = extras.MissingExtraError("charts", "bench", ["matplotlib"])
    assert isinstance(error, ImportError)
    assert error.name == "matplotlib"
    assert str(error) == (
        "charts needs the 'bench' extra (matplotlib not installed): "
        "pip install 'imagine-edge[bench]'"
    )
