"""Every `adgen` command has --help with examples, and bad invocations are one line."""
import pytest
from click.testing import CliRunner

from adgen.cli import COMMANDS, cli, main


def test_root_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_has_examples(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`adgen {name} --help` shows no examples"


def test_unknown_command_fails_cleanly(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
