"""Shared by the bad-input tests: run the CLI in-process and read its one-line error."""

from click.testing import CliRunner

from snnbackdoor.cli import main


def invoke(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def one_line_error(result) -> str:
    """The CLI's answer to bad input: exit 2, one line starting with `error:`."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]
