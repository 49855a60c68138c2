"""Command-line layer: parses arguments and calls the Python API, nothing more."""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from pathlib import Path

import click
import yaml

from .config import yaml_problem
from .errors import UserError, one_line
from .registry import PluginError, UnknownComponentError

DEBUG_ENV = "SNNBACKDOOR_DEBUG"
NAMED_ERRORS = (UserError, UnknownComponentError, PluginError)
DEBUG_HINT = " (run with --debug for the traceback)"

_OS_HINTS = {
    FileNotFoundError: "does not exist; check the path",
    PermissionError: "is not accessible (permission denied); choose another place or fix "
                     "its permissions",
    IsADirectoryError: "is a folder where a file was expected; name a file",
    NotADirectoryError: "has a part that is a file, not a folder; choose another path",
    FileExistsError: "already exists as something else; choose another path",
}


def _short_path(path: object, limit: int = 120) -> str:
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if len(text) <= limit else f"{text[:60]}...{text[-40:]} ({len(text)} chars)"


def os_error_message(err: OSError) -> str:
    """One line for a file-system error: the path, what the system said, what to do."""
    path = err.filename if err.filename is not None else None
    if err.strerror is None:  # raised by our code (or a reader) with its own message
        return str(err)
    if path is None:
        return f"{err.strerror}; check the paths given on the command line and in the config"
    where = _short_path(path) + (f" -> {_short_path(err.filename2)}"
                                 if err.filename2 is not None else "")
    if err.errno == errno.ENAMETOOLONG:
        return f"{where}: file name too long; choose a shorter name"
    if err.errno == errno.ENOSPC:
        return f"{where}: no space left on the device; free some space or choose another place"
    if err.errno in (errno.EROFS,):
        return f"{where}: read-only file system; choose a place you can write to"
    for cls, hint in _OS_HINTS.items():
        if isinstance(err, cls):
            return f"{where} {hint} ({err.strerror})"
    return f"{where}: {err.strerror}; check the path"


def user_message(err: BaseException) -> str | None:
    """The one-line message of an error the user can fix, or None for a library bug."""
    if isinstance(err, UserError) and getattr(err, "multiline", False):
        return str(err)
    if isinstance(err, NAMED_ERRORS):
        return one_line(err)
    if isinstance(err, yaml.YAMLError):  # a value parsed outside config.load_yaml_text
        return one_line(f"a value is not valid YAML ({yaml_problem(err)}); quote strings, "
                        "close brackets")
    if isinstance(err, UnicodeDecodeError):
        return one_line(f"a file is not UTF-8 text ({err.reason} at byte {err.start}); "
                        "save it as UTF-8")
    if isinstance(err, OSError):
        return one_line(os_error_message(err))
    if isinstance(err, (ValueError, KeyError)):  # raised with a message by a component's check
        text = err.args[0] if err.args else type(err).__name__
        return one_line(f"{text}{DEBUG_HINT}")
    return None


def debug_wanted(ctx: click.Context | None = None) -> bool:
    """--debug on the command line or SNNBACKDOOR_DEBUG=1 in the environment."""
    flag = bool(ctx is not None and ctx.meta.get("snnbackdoor.debug"))
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


class SnnGroup(click.Group):
    """Turns every user error into one line and exit code 2; a library bug keeps its
    traceback, and --debug (or SNNBACKDOOR_DEBUG=1) shows the traceback of both."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted: finished stages are saved; run again to resume", err=True)
            sys.exit(130)
        except click.exceptions.ClickException:
            raise
        except Exception as err:
            message = user_message(err)
            if message is None:
                raise
            if debug_wanted(ctx):
                traceback.print_exc()
            click.echo(f"error: {message}", err=True)
            sys.exit(2)


@click.group(cls=SnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help=f"Show the traceback of an error (or {DEBUG_ENV}=1).")
@click.option("--quiet", "-q", "quiet", is_flag=True,
              help="No progress bars (sets train.progress=false; warnings still print).")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """snnbackdoor: mount, measure and defend against backdoors in spiking neural networks."""
    ctx.meta["snnbackdoor.debug"] = debug
    ctx.meta["snnbackdoor.quiet"] = quiet
    threads = os.environ.get("SNNBACKDOOR_THREADS")
    if threads:
        if not threads.strip().isdigit() or not 1 <= int(threads) <= 4096:
            raise UserError(f"SNNBACKDOOR_THREADS={threads!r} must be a whole number of "
                            "threads in 1..4096; unset it to use the default")
        import torch

        torch.set_num_threads(int(threads))


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.epochs=5 (repeatable).",
)


tensorboard_option = click.option(
    "--tensorboard", "tensorboard", type=click.Path(file_okay=False), default=None,
    metavar="DIR", help="Log training curves to TensorBoard under DIR (sets train.tensorboard).",
)


def display_overrides(overrides: tuple[str, ...], tensorboard: str | None = None) -> tuple:
    """`overrides` plus the display settings of the command line: the group's --quiet
    (train.progress=false) and --tensorboard DIR (train.tensorboard), recorded in config.yaml
    like any key (a resumed run may change them: they never change results)."""
    ctx = click.get_current_context(silent=True)
    extra = []
    if ctx is not None and ctx.meta.get("snnbackdoor.quiet"):
        extra.append("train.progress=false")
    if tensorboard is not None:
        extra.append(f"train.tensorboard={json.dumps(str(tensorboard))}")
    return (*overrides, *extra)


def _quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("snnbackdoor.quiet"))


def _out_option(help_text: str):
    return click.option("--out", type=click.Path(file_okay=False), default=None, help=help_text)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@_out_option("Run directory (default runs/<name>).")
@set_option
def train(config: str, out: str | None, overrides: tuple[str, ...]) -> None:
    """Train a clean model from CONFIG (kind: train) and write its run directory."""
    from .experiments.base import load_config, run_experiment

    cfg = load_config(config, display_overrides(overrides))
    if cfg.kind != "train":
        raise ValueError(f"{config} is a '{cfg.kind}' config: use `snnbackdoor run {config}`")
    result = run_experiment(cfg, out)
    click.echo(json.dumps(result.metrics, indent=2))
    click.echo(f"run directory: {result.path}")


def _executor_options(command):
    """--executor and its options (Ray, Slurm), shared by `run` and `sweep`."""
    options = [
        click.option("--executor", "executor_name", type=click.Choice(["local", "ray", "slurm"]),
                     default="local", show_default=True,
                     help="Where tasks run: here in order, a Ray cluster, or Slurm jobs."),
        click.option("--ray-address", "address", default=None, metavar="ADDR",
                     help="Ray cluster to join (default $RAY_ADDRESS, else a local one)."),
        click.option("--cpus-per-task", type=float, default=None,
                     help="CPUs each task asks for (ray, slurm; default 1)."),
        click.option("--gpus-per-task", type=float, default=None,
                     help="GPUs each task asks for (ray, slurm; default 0)."),
        click.option("--partition", default=None, help="Slurm partition."),
        click.option("--time", "time_limit", default=None, metavar="[D-]HH:MM:SS",
                     help="Slurm time limit per task, or minutes (default 8:00:00)."),
        click.option("--array-parallelism", type=int, default=None,
                     help="Slurm: at most this many tasks of the array at once (default 64)."),
        click.option("--quiet", "-q", is_flag=True, help="No task progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _make_executor(executor_name: str, quiet: bool, time_limit: str | None, **options):
    from .executors import make_executor

    return make_executor(executor_name, progress=not (quiet or _quiet()), time=time_limit,
                         **options)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@_out_option("Run directory (default runs/<name>).")
@set_option
@tensorboard_option
@_executor_options
def run(config: str, out: str | None, overrides: tuple[str, ...], tensorboard: str | None,
        **executor_options) -> None:
    """Run any experiment config (its `kind` says which) and write its run directory.
    Experiments that split into tasks send them to --executor; others run whole as one."""
    from .executors import TaskFailed
    from .experiments.base import load_config
    from .sweep import run_config

    cfg = load_config(config, display_overrides(overrides, tensorboard))
    with _make_executor(**executor_options) as executor:
        try:
            result = run_config(cfg, out, executor)
        except TaskFailed as err:
            for failed in err.failed:
                click.echo(f"failed: {failed.key}:\n{failed.error}", err=True)
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
    summary = {k: v for k, v in result.metrics.items()
               if not isinstance(v, (list, dict)) or k == "warnings"}
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"run directory: {result.path}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test")
def evaluate(run_dir: str, split: str) -> None:
    """Accuracy and spikes/sample of every model in a run directory."""
    from .inspect_run import evaluate_run

    click.echo(json.dumps(evaluate_run(run_dir, split), indent=2))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--model", "model_name", default="model", show_default=True,
              help="Which model file of the run (without .safetensors).")
@set_option
def analyze(run_dir: str, model_name: str, overrides: tuple[str, ...]) -> None:
    """Accuracy and spikes/sample vs V_thr, tau and input power q (BadSNN Fig. 2)."""
    from .inspect_run import analyze_run

    table, paths = analyze_run(run_dir, model_name, overrides)
    click.echo(table)
    for path in paths:
        click.echo(f"wrote {path}")


@main.command()
@_out_option("Run directory (default runs/demo).")
@click.option("--seed", type=int, default=0, show_default=True)
@set_option
@tensorboard_option
def demo(out: str | None, seed: int, overrides: tuple[str, ...],
         tensorboard: str | None) -> None:
    """BadSNN end to end on the embedded digits: clean and backdoored SNNs, T_p and T_o,
    attack-config search, control on the clean model; writes metrics.json and report.md."""
    from .experiments.badsnn import demo_config
    from .experiments.base import run_experiment
    from .report.badsnn import table1

    config = demo_config(seed, display_overrides(overrides, tensorboard))
    result = run_experiment(config, out or "runs/demo")
    metrics = result.metrics
    click.echo(table1(metrics, metrics["grid"]))
    click.echo(f"asr_o_clean_model (control): {metrics['asr_o_clean_model']}")
    click.echo(f"seconds: {json.dumps(metrics['seconds'])}")
    click.echo(f"report: {result.path / 'report.md'}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2",
              help="A swept key and its values (repeatable; cartesian product).")
@_out_option("Folder of the sweep (default runs/sweep_<name>).")
@set_option
@_executor_options
def sweep(config: str, grid: tuple[str, ...], out: str | None,
          overrides: tuple[str, ...], **executor_options) -> None:
    """Run CONFIG once per cell of a grid (its `sweep:` section and/or --grid), one task per
    cell on --executor; finished cells are skipped, so running again resumes the sweep."""
    from .sweep import run_sweep

    with _make_executor(**executor_options) as executor:
        result = run_sweep(config, grid, display_overrides(overrides), out, executor)
    click.echo(f"{len(result.rows)} cells finished; summary: {result.path}")
    if result.figure is not None:
        click.echo(f"figure: {result.figure}")
    for failed in result.failed:
        last = failed.error.strip().splitlines()[-1] if failed.error else "?"
        click.echo(f"failed: {failed.key}: {last}", err=True)
    if result.failed:
        click.echo(f"{len(result.failed)} cell(s) failed (errors in "
                   f"{result.path.parent / 'tasks' / 'tasks.json'}); run the same command "
                   "again to retry them", err=True)
        sys.exit(1)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
def report(runs: tuple[str, ...]) -> None:
    """Re-render each run directory's report (report.md, CSV, figures) from its files, then
    print their scalar metrics side by side."""
    from .io import read_json
    from .report import render
    from .sweep import flatten

    rows = {}
    for run_dir in runs:
        written = render(run_dir)
        rows[run_dir] = flatten(read_json(Path(run_dir) / "metrics.json", dict, "run file"))
        for path in written:
            click.echo(f"wrote {path}", err=True)
    keys = list(dict.fromkeys(k for row in rows.values() for k in row
                              if not k.startswith(("seconds.", "control.", "trigger_o."))))
    click.echo("| metric | " + " | ".join(rows) + " |")
    click.echo("|---|" + "---|" * len(rows))
    for key in keys:
        cells = [_fmt(row.get(key)) for row in rows.values()]
        click.echo(f"| {key} | " + " | ".join(cells) + " |")
    for run_dir in runs:
        if (Path(run_dir) / "report.md").exists():
            click.echo(f"report: {Path(run_dir) / 'report.md'}")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


@main.command()
@click.option("--root", type=click.Path(), default=None, help="Folder to look for files in.")
def datasets(root: str | None) -> None:
    """List datasets, whether their files were found under --root (a few decoded, so corrupt
    files are reported), and the layouts."""
    from .data.registry import dataset_status
    from .registry import components

    entries = {c.name: c.meta["entry"] for c in components("dataset")}
    problems = []
    for name, entry in entries.items():
        status, problem = dataset_status(entry, root)
        if problem:
            problems.append(f"  {name}: {one_line(problem, 300)}")
        click.echo(f"{name:12s} {status:28s} {entry.description}")
    if problems:
        click.echo("\nDamaged files under --root:\n" + "\n".join(problems))
    with_layout = [(n, e) for n, e in entries.items() if e.layout]
    if with_layout:
        click.echo("\nExpected layouts (pass the top folder as dataset.root):")
        for name, entry in with_layout:
            click.echo(f"\n[{name}]\n{entry.layout}")


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--data", default=None, help="Dataset the model is for (default: the run's).")
@click.option("--seed", default=0, show_default=True, help="Seed of the defender's subset.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: verdict, target, "
              "detectors.")
def scan(path: str, data: str | None, seed: int, as_json: bool) -> None:
    """Is this model backdoored? Run every model-level detector on PATH (a model file or a
    badsnn/train run directory), print a verdict, write scan.json and a figure beside it."""
    from .scan_command import scan_json, scan_path, scan_text

    record, written = scan_path(path, data, seed)
    click.echo(scan_json(record) if as_json else scan_text(record))
    if not as_json:
        click.echo(f"wrote {', '.join(str(p) for p in written)}")


@main.command(name="list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object keyed by kind.")
def list_components(kind: str | None, as_json: bool) -> None:
    """Every registered component (model, dataset, trigger, attack, defense, detector,
    scanner, experiment), with its one-line description and options; KIND narrows it to one kind."""
    from .registry import describe

    table = describe(kind)
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for section, items in table.items():
        click.echo(f"[{section}]")
        for name, item in items.items():
            click.echo(f"  {name:18s} {item['description']}")
            if item["options"]:
                shown = ", ".join(f"{k}={v!r}" for k, v in item["options"].items())
                click.echo(f"  {'':18s} options: {shown}")
        click.echo("")


if __name__ == "__main__":  # pragma: no cover
    main()
