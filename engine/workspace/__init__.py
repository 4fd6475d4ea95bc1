"""A workspace folder: workspace.toml (paths, hosts file, stage and training options) and the saved state of every stage and job."""

from __future__ import annotations

import difflib
import json
import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from engine import options as opt
from engine.cluster.process.alerts import AlertOptions
from engine.errors import UserError
from engine.paths import make_folder, write_text_atomic
from engine.prep import options as prep_options
from engine.train import options as train_options

CONFIG_NAME = "workspace.toml"
STATE_NAME = "state.json"
# The one stage order: the preparation stages, then training (the job).
PREP_STAGES = ("disk", "extract", "filter", "split", "list", "pack", "place")
STAGES = (*PREP_STAGES, "train")
UNDOABLE = ("filter", "split")
STATES = ("pending", "running", "done", "failed", "stale", "stopped")

# What a new workspace starts with: the tutorial's values, from the stages' option dataclasses.
DEFAULT_STAGE_OPTIONS: dict[str, dict[str, Any]] = {
    stage: prep_options.workspace_defaults().get(stage, {}) for stage in PREP_STAGES
}
DEFAULT_TRAIN: dict[str, Any] = train_options.workspace_defaults()


@dataclass(frozen=True)
class StageStatus:
    """What the console shows for one stage: state, counts, rate and ETA (None where unknown)."""

    name: str
    state: str = "pending"
    done: int = 0
    total: int | None = None
    skipped: int = 0
    unit: str = ""
    rate: float | None = None
    eta_s: float | None = None
    message: str = ""
    undoable: bool = False


@dataclass(frozen=True)
class WorkspaceSnapshot:
    """Everything the console needs to draw when it opens: no live connection implied."""

    path: str
    name: str
    root: str
    hosts_file: str
    stages: tuple[StageStatus, ...]
    train: tuple[tuple[str, Any], ...]
    job: str = ""  # id of the current or last job ("" if none)
    job_state: str = ""
    hosts: tuple[str, ...] = ()


@dataclass
class Workspace:
    path: Path
    config: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    # Stage threads and the console's loop both record state.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    # Folders the user named on this command line: the only places outside the workspace folder
    # that stages may write to or move files in (workspace.toml alone cannot send them there).
    given: tuple[Path, ...] = ()

    # ---- paths -------------------------------------------------------------------------
    def resolve(self, value: str) -> Path:
        """A config path, relative to the workspace folder unless absolute."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.path / p

    def check_paths(self) -> None:
        """Refuse a workspace.toml whose written-to paths leave the workspace folder: a stray
        ``root = "../../etc"`` must never make a stage extract into or move files out of /etc."""
        for key in WRITTEN_KEYS:
            if key not in self.config:
                continue  # defaults lie inside the workspace, or beside an allowed root
            path = Path(os.path.normpath(self.resolve(self.config[key]))).resolve()
            if not any(path == top or top in path.parents for top in (self.path, *self.given)):
                how = f" or give it on the command line: --source {path}" if key == "root" else ""
                raise UserError(
                    f"{self.path / CONFIG_NAME}: {key} = {self.config[key]!r} leads to {path}, "
                    f"outside the workspace; use a folder inside {self.path}{how}"
                )

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.path.name))

    @property
    def root(self) -> Path:
        return self.resolve(self.config["root"])

    @property
    def tarball(self) -> Path:
        return self.resolve(self.config.get("tarball", "fall11_whole.tar"))

    @property
    def train_dir(self) -> Path:
        return self.resolve(self.config.get("train_dir", "train"))

    @property
    def val_dir(self) -> Path:
        return self.resolve(self.config.get("val_dir", "val"))

    @property
    def val_root(self) -> Path:
        return self.resolve(self.config.get("val_root", str(self.root) + "_val"))

    @property
    def lists_dir(self) -> Path:
        return self.resolve(self.config.get("lists_dir", "lists"))

    @property
    def jobs_dir(self) -> Path:
        return self.path / "jobs"

    @property
    def hosts_file(self) -> Path | None:
        value = self.config.get("hosts", "")
        return self.resolve(value) if value else None

    @property
    def launcher(self) -> str:
        """How jobs start: `launcher = "slurm"` in workspace.toml, else ssh with a hosts file, else local."""
        value = self.config.get("launcher") or ("ssh" if self.hosts_file else "local")
        if value not in LAUNCHERS:
            raise UserError(
                f"{self.path / CONFIG_NAME}: launcher = {value!r}; use one of {', '.join(LAUNCHERS)}"
            )
        return str(value)

    def alert_options(self) -> dict[str, Any]:
        """The [alerts] table (notify, stall_alert_s, straggler_ratio), each value checked."""
        table = dict(self.config.get("alerts", {}))
        opt.build(AlertOptions, table, where="alerts.")
        return table

    def slurm_options(self) -> dict[str, Any]:
        """The [slurm] table: nodes, gpus_per_node, partition, time, account, sbatch_args."""
        return dict(self.config.get("slurm", {}))

    # ---- options -----------------------------------------------------------------------
    @overload
    def stage_options(self, stage: Literal["disk"]) -> prep_options.DiskOptions: ...
    @overload
    def stage_options(self, stage: Literal["filter"]) -> prep_options.FilterOptions: ...
    @overload
    def stage_options(self, stage: Literal["split"]) -> prep_options.SplitOptions: ...
    @overload
    def stage_options(self, stage: Literal["list"]) -> prep_options.ListOptions: ...
    @overload
    def stage_options(self, stage: Literal["pack"]) -> prep_options.PackOptions: ...
    @overload
    def stage_options(self, stage: str) -> Any: ...
    def stage_options(self, stage: str) -> Any:
        """A stage's option dataclass (e.g. PackOptions): the tutorial's values, overridden by
        workspace.toml's."""
        if stage not in prep_options.GROUPS:
            raise UserError(
                f"stage {stage!r} has no options (stages: {', '.join(prep_options.GROUPS)})"
            )
        return prep_options.stage_options(stage, self._stored(stage))

    def train_options(self) -> train_options.WorkspaceTrain:
        """The [train] table, typed: training options and job options (CLUSTER's where unset)."""
        return train_options.WorkspaceTrain.build(self._stored("train"))

    def _stored(self, stage: str) -> dict[str, Any]:
        """The values workspace.toml holds for a stage (or "train") that an option declares; a key
        nothing declares stays in the file and is read by nothing (an older or hand-added one)."""
        if stage == "train":
            table, known = self.config.get("train", {}), train_options.WORKSPACE_KEYS
        else:
            table = self.config.get("stages", {}).get(stage, {})
            known = tuple(f.name for f, _ in opt.fields(prep_options.GROUPS[stage]))
        return {k: v for k, v in table.items() if k in known}

    def option_values(self, stage: str) -> dict[str, Any]:
        """What the console shows of a stage's (or "train") options: name -> value."""
        if stage == "train":
            return self.train_options().values()
        if stage not in prep_options.GROUPS:
            return {}
        return prep_options.console_values(self.stage_options(stage))

    def option_fields(self, stage: str) -> tuple[opt.FormField, ...]:
        """The console's form for a stage's (or "train") options: type, default, bounds and help."""
        values = self.option_values(stage)
        if stage == "train":
            return opt.form_fields(
                train_options.TrainOptions, values, base=train_options.CLUSTER
            ) + opt.form_fields(train_options.JobOptions, values)
        if stage in prep_options.GROUPS:
            return opt.form_fields(
                prep_options.GROUPS[stage], values, base=prep_options.TUTORIAL[stage]
            )
        return ()

    def set_stage_options(self, stage: str, values: dict[str, Any]) -> None:
        """Save new options; a finished stage (and those after it) become stale."""
        current = self.stage_options(stage)  # refuses a stage without options
        typed = opt.build(type(current), values, base=current, where=f"{stage}.")
        saved = {k: getattr(typed, k) for k in values}
        self.config.setdefault("stages", {}).setdefault(stage, {}).update(saved)
        save_config(self.path, self.config)
        self.mark_stale_from(stage)

    def set_train_options(self, values: dict[str, Any]) -> None:
        typed = train_options.WorkspaceTrain.build(values, base=self.train_options())
        self.config.setdefault("train", {}).update({k: typed.value(k) for k in values})
        save_config(self.path, self.config)

    # ---- stage state -------------------------------------------------------------------
    def stage_record(self, stage: str) -> dict[str, Any]:
        return self.state.setdefault("stages", {}).setdefault(stage, {"state": "pending"})

    def update_stage(self, stage: str, **fields: Any) -> None:
        with self.lock:
            self.stage_record(stage).update(fields)
            save_state(self.path, self.state)

    def mark_stale_from(self, stage: str, include_self: bool = True) -> None:
        """Finished stages at or after `stage` no longer match their inputs."""
        start = STAGES.index(stage) + (0 if include_self else 1)
        with self.lock:
            for name in STAGES[start:]:
                record = self.stage_record(name)
                if record.get("state") == "done":
                    record["state"] = "stale"
            save_state(self.path, self.state)

    def stage_statuses(self) -> tuple[StageStatus, ...]:
        return tuple(status_from_record(name, self.stage_record(name)) for name in STAGES)

    def set_job(self, job_id: str, state: str) -> None:
        with self.lock:
            self.state["job"] = {"id": job_id, "state": state}
            save_state(self.path, self.state)

    def set_job_mode(self, job_id: str, mode: str) -> None:
        """What a launched job runs (train | benchmark | test-io), for re-attaching to it."""
        with self.lock:
            self.state.setdefault("job_modes", {})[job_id] = mode
            save_state(self.path, self.state)

    def set_speeds(self, mode: str, per_host: dict[str, float], job_id: str) -> None:
        """Each host's whole-run images/s of the last ``mode`` job, and which job it was."""
        with self.lock:
            self.state.setdefault("speeds", {})[mode] = per_host
            self.state.setdefault("speed_jobs", {})[mode] = job_id
            save_state(self.path, self.state)

    def set_hosts_file(self, path: Path) -> None:
        self.config["hosts"] = str(path)
        save_config(self.path, self.config)

    def snapshot(self, hosts: tuple[str, ...] = ()) -> WorkspaceSnapshot:
        job = self.state.get("job", {})
        return WorkspaceSnapshot(
            path=str(self.path),
            name=self.name,
            root=str(self.root),
            hosts_file=str(self.hosts_file or ""),
            stages=self.stage_statuses(),
            train=tuple(sorted(self.option_values("train").items())),
            job=job.get("id", ""),
            job_state=job.get("state", ""),
            hosts=hosts,
        )


def status_from_record(name: str, record: dict[str, Any]) -> StageStatus:
    return StageStatus(
        name=name,
        state=record.get("state", "pending"),
        done=int(record.get("done", 0)),
        total=record.get("total"),
        skipped=int(record.get("skipped", 0)),
        unit=record.get("unit", ""),
        message=record.get("message", ""),
        undoable=name in UNDOABLE,
    )


# Paths stages extract into, move files in or write to (tarball and hosts are only read).
WRITTEN_KEYS = ("root", "val_root", "lists_dir", "train_dir", "val_dir")
LAUNCHERS = ("local", "ssh", "slurm")
PATH_KEYS = ("root", "tarball", "val_root", "lists_dir", "train_dir", "val_dir", "hosts", "name")


def check_config(config_path: Path, config: dict[str, Any]) -> None:
    """A hand-edited workspace.toml with a value of the wrong type: name the key, not a TypeError later."""
    for key in PATH_KEYS:
        if key in config and not isinstance(config[key], str):
            raise UserError(
                f'{config_path}: {key} = {config[key]!r} must be text, e.g. {key} = "…"'
            )
        if "\0" in config.get(key, ""):
            raise UserError(
                f"{config_path}: {key} = {config[key]!r}: a path cannot hold a NUL byte"
            )
    for table in ("stages", "train", "alerts"):
        if not isinstance(config.get(table, {}), dict):
            raise UserError(
                f"{config_path}: {table} must be a table ([{table}]), not {config[table]!r}"
            )
    for stage, options in config.get("stages", {}).items():
        if not isinstance(options, dict):
            raise UserError(
                f"{config_path}: stages.{stage} must be a table ([stages.{stage}]), not {options!r}"
            )
        defaults = DEFAULT_STAGE_OPTIONS.get(stage, {})
        for key, value in options.items():
            _check_type(config_path, f"stages.{stage}.{key}", defaults.get(key), value)
    for key, value in config.get("train", {}).items():
        _check_type(config_path, f"train.{key}", DEFAULT_TRAIN.get(key), value)
    _check_bounds(config_path, config)
    check_keys(config_path, config)


def _check_bounds(config_path: Path, config: dict[str, Any]) -> None:
    """Values of the right type but outside their option's bounds, named as written in the file."""
    ws = Workspace(config_path.parent, config)
    try:
        for stage in config.get("stages", {}):
            if stage in prep_options.GROUPS:
                ws.stage_options(stage)
        ws.train_options()
        ws.alert_options()
    except UserError as exc:
        raise UserError(f"{config_path}: {exc}; fix the file and reopen") from None


# Top-level keys and tables a workspace.toml may hold; [slurm] keys are checked at launch.
TOP_KEYS = (*PATH_KEYS, "launcher", "slurm", "stages", "train", "alerts")


def known_keys() -> dict[str, set[str]]:
    """Table -> the keys read from it ("" is the top level); anything else is a typo read by nobody."""
    known = {"": set(TOP_KEYS), "stages": set(DEFAULT_STAGE_OPTIONS)}
    for stage, defaults in DEFAULT_STAGE_OPTIONS.items():
        group = prep_options.GROUPS.get(stage)
        fields_ = {f.name for f, _ in opt.fields(group)} if group else set()
        known[f"stages.{stage}"] = set(defaults) | fields_
    groups = (train_options.TrainOptions, train_options.JobOptions)
    known["train"] = {f.name for group in groups for f, _ in opt.fields(group)}
    known["alerts"] = {f.name for f, _ in opt.fields(AlertOptions)}
    return known


def check_keys(config_path: Path, config: dict[str, Any]) -> None:
    """A misspelt key would be silently ignored: name it, with the nearest key that is read."""
    known = known_keys()
    tables = [
        ("", config),
        ("stages", config.get("stages", {})),
        ("train", config.get("train", {})),
        ("alerts", config.get("alerts", {})),
    ]
    tables += [
        (f"stages.{s}", o) for s, o in config.get("stages", {}).items() if s in known["stages"]
    ]
    for table, values in tables:
        for key in values:
            if key not in known[table]:
                raise UserError(f"{config_path}: {unknown_key(table, key, known[table])}")


def unknown_key(table: str, key: str, known: set[str]) -> str:
    name = f"{table}.{key}" if table else key
    near = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {near[0]}?" if near else f"known: {', '.join(sorted(known))}"
    return f"unknown key {name} ({hint}); fix the file and reopen"


TYPE_WORDS = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text",
    list: "a list",
}


def _check_type(config_path: Path, name: str, default: Any, value: Any) -> None:
    if default is None or (isinstance(default, list) and isinstance(value, str)):
        return  # no default: anything goes; a list may be written as "a,b" text
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    ok = isinstance(value, bool) == isinstance(default, bool) and (
        isinstance(value, (int, float)) if numeric else isinstance(value, type(default))
    )
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        ok = False
    if not ok:
        kind = TYPE_WORDS.get(type(default), type(default).__name__)
        raise UserError(f"{config_path}: {name} = {value!r} must be {kind}, like {default!r}")


# ---- files ---------------------------------------------------------------------------------
def load(path: str | os.PathLike[str]) -> Workspace:
    """Open an existing workspace folder."""
    folder = Path(path).expanduser().resolve()
    config_path = folder / CONFIG_NAME
    if not folder.exists():
        raise UserError(
            f"{folder} does not exist; give a workspace folder, or create one with `imgscale-tui --demo {folder}`"
        )
    if not folder.is_dir():
        raise UserError(
            f"{folder} is a file; give the workspace folder (the one holding {CONFIG_NAME})"
        )
    if not config_path.is_file():
        raise UserError(
            f"{folder}: no {CONFIG_NAME} here; create one with `imgscale-tui --demo {folder}` or write it by hand"
        )
    try:
        config = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{config_path}: {exc}; fix the file and reopen") from None
    except UnicodeDecodeError:
        raise UserError(
            f"{config_path}: not a text file (not UTF-8); fix the file and reopen"
        ) from None
    if "root" not in config:
        raise UserError(f'{config_path}: missing `root = "…"` (the folder of class folders)')
    check_config(config_path, config)
    state_path = folder / STATE_NAME
    try:
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for a binary file
        raise UserError(
            f"{state_path}: not valid JSON ({exc}); move it away to start the stages' record afresh"
        ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"{state_path}: not a stages record (a JSON object); move it away to start afresh"
        )
    return Workspace(folder, config, state)


def create(path: str | os.PathLike[str], config: dict[str, Any]) -> Workspace:
    """Write a new workspace folder (refuses to overwrite another workspace's config)."""
    folder = Path(path).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a new or existing folder for the workspace")
    make_folder(folder, "workspace")
    if (folder / CONFIG_NAME).exists():
        raise UserError(
            f"{folder / CONFIG_NAME} already exists; open it with `imgscale-tui {folder}`"
        )
    save_config(folder, config)
    return Workspace(folder, config, {})


def save_config(folder: Path, config: dict[str, Any]) -> None:
    write_text_atomic(folder / CONFIG_NAME, dumps_toml(config))


def save_state(folder: Path, state: dict[str, Any]) -> None:
    write_text_atomic(folder / STATE_NAME, json.dumps(state, indent=1, sort_keys=True))


# ---- a tiny TOML writer (tomllib only reads) ------------------------------------------------
def dumps_toml(data: dict[str, Any]) -> str:
    """Scalars and lists first, then tables, recursively (enough for workspace.toml)."""
    lines: list[str] = []
    _write_table(lines, data, prefix="")
    return "\n".join(lines).strip() + "\n"


def _write_table(lines: list[str], table: dict[str, Any], prefix: str) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"\n[{prefix}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _write_table(lines, value, f"{prefix}.{_key(key)}" if prefix else _key(key))


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _string(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    escaped = "".join(c if ord(c) >= 0x20 and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'
