"""Every command's help shows one to three real examples (issue #22 item 13)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if isinstance(command, click.Group):
            out += _commands(command, path)
    return out


@pytest.mark.parametrize("path", [p for p in _commands(cli)], ids=" ".join)
def test_help_shows_examples(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "\n  Examples:\n" in result.output
    examples = result.output.split("\n  Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 1 <= len(examples) <= 3 and all(line.strip().startswith(("python main.py", "nohup python main.py")) for line in examples)
