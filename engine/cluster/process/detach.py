"""Pure builders of the shell lines that start, watch, tail and kill detached processes on a host.

A detached process is started as ``setsid sh -c WRAPPER``: the wrapper shell leads a new session and
process group (so a lost SSH session or a closed console never reaches it, and the whole group can
be signalled at once), runs the command with stdout+stderr appended to ``PREFIX.log``, writes
``PREFIX.pid`` ("wrapper_pid pgid child_pid") as soon as the command runs, and writes the command's
exit status (128+N when killed by signal N) to ``PREFIX.status`` when it ends. Files are written to a
temporary name and renamed, so a reader never sees half a record. Only POSIX sh, setsid, tail and
kill are needed on the host; the host's ``python=`` runs the user's command, not our bookkeeping.

``PREFIX`` is a path without extension such as ``~/.imgscale/runs/JOB/a0/worker-1``; a leading ``~/``
is expanded by the host's shell (``"$HOME"/…``), everything else is ``shlex.quote``d.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.cluster.remote_cmd import join_argv, shell_path

# $1 prefix, $2 working directory, $3… the command. Runs under dash as well as bash. The
# environment comes from PREFIX.env (mode 0600, removed once read), never from a command line.
# fd 3 is the starter's pipe: closing it, once the pid record exists, tells the starter that this
# process has left the starter's session and can no longer die with it.
WRAPPER = r"""p=$1; d=$2; shift 2
if [ -f "$p.env" ]; then . "$p.env"; rm -f "$p.env"; fi
if ! cd "$d" 2>>"$p.log"; then
  echo "imgscale: cannot enter working directory $d" >>"$p.log"
  echo 126 >"$p.status.tmp" && mv -f "$p.status.tmp" "$p.status"; exit 126
fi
"$@" >>"$p.log" 2>&1 </dev/null 3>&- &
c=$!
trap 'kill -s TERM "$c" 2>/dev/null' TERM HUP INT
echo "$$ $$ $c" >"$p.pid.tmp" && mv -f "$p.pid.tmp" "$p.pid"
exec 3>&-
while :; do wait "$c"; r=$?; kill -s 0 "$c" 2>/dev/null || break; done
echo "$r" >"$p.status.tmp" && mv -f "$p.status.tmp" "$p.status"
"""

# $1 seconds between rounds, $2… prefixes. One line per process per round, then ".".
# A round costs no fork besides sleep; the loop ends with the channel (SIGPIPE on the next echo).
STATUS_LOOP = r"""iv=$1; shift
while :; do
  i=0
  for p in "$@"; do
    s=pending; w=-; g=-; c=-
    if [ -f "$p.pid" ]; then read w g c <"$p.pid"; s=gone
      if kill -s 0 "$c" 2>/dev/null || kill -s 0 "$w" 2>/dev/null; then s=alive; fi
    fi
    if [ -f "$p.status" ]; then read r <"$p.status"; s="exit:$r"; fi
    echo "$i $s $w $g $c"
    i=$((i+1))
  done
  echo .
  sleep "$iv"
done
"""

# $1 job id, $2 grace seconds, $3… prefixes. Signals the process group of every recorded process
# that is provably ours (run by this user, IMGSCALE_JOB=<job> in its environment and still in the
# recorded group): TERM, then KILL after the grace period, then waits (3 s at most) until each
# group is empty. A prefix without its pid record yet (stopped while starting) sends the script
# through /proc for the job's processes: each one in a group of its own has its group ended like
# a recorded one; one still in its starter's group is killed alone (it runs nothing of the user's).
# Prints "term PGID", "kill PGID", "gone PGID", "foreign PID", "stuck PGID" (survived KILL), "done".
KILL = r"""job=$1; grace=$2; shift 2
me=$(id -u)
stat_of() { st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; set -- ${st##*) }; state=$1; pg=$3; }
uid_of() { while read -r k a _; do [ "$k" = Uid: ] && { echo "$a"; return; }; done <"/proc/$1/status"; }
carries_job() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "IMGSCALE_JOB=$job"; }
ours() { [ "$(uid_of "$1" 2>/dev/null)" = "$me" ] && carries_job "$1"; }
groups=; unrecorded=
for p in "$@"; do
  [ -f "$p.pid" ] || { unrecorded=1; continue; }
  read w g c <"$p.pid"
  found=; foreign=
  for q in "$w" "$c"; do
    if stat_of "$q"; then
      [ "$state" = Z ] && continue  # exited, not yet reaped: nothing to signal
      if [ "$pg" = "$g" ] && ours "$q"; then found=1
      else echo "foreign $q"; foreign=1; fi
    fi
  done
  # Wrapper and command gone (a SIGKILLed rank), but the group may hold their children still
  # (a data loader's workers): it is ours if one of its members is ours and carries the job's id.
  if [ -z "$found$foreign" ] && kill -s 0 -- "-$g" 2>/dev/null; then
    for d in /proc/[0-9]*; do
      q=${d#/proc/}
      stat_of "$q" && [ "$pg" = "$g" ] && [ "$state" != Z ] && ours "$q" && { found=1; break; }
    done
  fi
  # CONT after TERM: a stopped (hung, SIGSTOPped) process acts on TERM only once it runs again
  if [ -n "$found" ]; then
    groups="$groups $g"; kill -s TERM -- "-$g" 2>/dev/null; kill -s CONT -- "-$g" 2>/dev/null
    echo "term $g"
  else echo "gone $g"; fi
done
if [ -n "$unrecorded" ]; then
  for d in /proc/[0-9]*; do
    q=${d#/proc/}
    [ "$q" = "$$" ] && continue
    stat_of "$q" && [ "$state" != Z ] && ours "$q" || continue
    case " $groups " in *" $pg "*) continue ;; esac
    g=$pg
    if [ "$g" = "$q" ] || { stat_of "$g" && ours "$g"; }; then
      groups="$groups $g"; kill -s TERM -- "-$g" 2>/dev/null; echo "term $g"
    else kill -s KILL "$q" 2>/dev/null; echo "kill $q"; fi
  done
fi
n=0; killed=
while [ -n "$groups" ]; do
  left=
  for g in $groups; do kill -s 0 -- "-$g" 2>/dev/null && left="$left $g"; done
  groups=$left
  [ -z "$groups" ] && break
  if [ -z "$killed" ] && [ "$n" -ge "$((grace*10))" ]; then
    for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; echo "kill $g"; done
    killed=$n
  elif [ -n "$killed" ] && [ "$n" -ge "$((killed+30))" ]; then
    for g in $groups; do echo "stuck $g"; done
    break
  fi
  n=$((n+1)); sleep 0.1
done
echo done
"""


def env_assignments(env: Mapping[str, str]) -> str:
    """``K='v' …`` prefix assignments (names are checked by the caller: dmlc_env.check_user_key)."""
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())


# Only the job id travels on the command line (``kill`` proves a process is ours by it, from the
# process's first environment); every other variable, the user's secrets included, goes through
# PREFIX.env, which no `ps` shows.
INLINE_ENV = ("IMGSCALE_JOB",)


@dataclass(frozen=True)
class DetachedProcess:
    """One process to start detached: its file prefix on the host, working directory, argv and env."""

    prefix: str
    cwd: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> str:
        return self.prefix + ".log"

    @property
    def pid_path(self) -> str:
        return self.prefix + ".pid"

    @property
    def status_path(self) -> str:
        return self.prefix + ".status"

    @property
    def env_path(self) -> str:
        return self.prefix + ".env"

    @property
    def inline_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k in INLINE_ENV}

    @property
    def file_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k not in INLINE_ENV}


def start_one(proc: DetachedProcess) -> str:
    """The line that starts one process detached and returns once it has its own session.

    The command substitution reads the wrapper's fd 3 until the wrapper closes it after writing
    its pid record: only then may the channel (and its process group) go away. Returning as soon
    as ``setsid`` was backgrounded let a closing channel kill a child not yet in its session.
    """
    words = [
        "setsid",
        "sh",
        "-c",
        shlex.quote(WRAPPER),
        "imgscale-run",
        shell_path(proc.prefix),
        shell_path(proc.cwd),
        join_argv(proc.argv),
    ]
    assign = env_assignments(proc.inline_env)
    line = (assign + " " if assign else "") + " ".join(words)
    return f"ready=$({line} 3>&1 </dev/null >/dev/null 2>&1 &)"


def start_command(procs: Sequence[DetachedProcess]) -> str:
    """One command line starting every process of one host, after creating their directories.

    Run ``env_files`` first: the processes read their environment from there."""
    # Each attempt has a fresh run directory, so there are no stale records to remove first.
    starts = "\n".join(start_one(p) for p in procs)
    return f"{mkdir_command(procs)} || exit 1\n{starts}\necho started"


def mkdir_command(procs: Sequence[DetachedProcess]) -> str:
    dirs = sorted({_dirname(p.prefix) for p in procs})
    return "mkdir -p " + " ".join(shell_path(d) for d in dirs)


def env_files(procs: Sequence[DetachedProcess]) -> tuple[str, str]:
    """A command and the script to give it on stdin that write every process's PREFIX.env (0600).

    The values travel inside the script on stdin, so no command line on the host ever holds them."""
    mark = "IMGSCALE_ENV_" + secrets.token_hex(8)
    parts = []
    for proc in procs:
        lines = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in proc.file_env.items())
        parts.append(f"cat >{shell_path(proc.env_path)} <<'{mark}'\n{lines}{mark}\n")
    return f"umask 077 && {mkdir_command(procs)} && sh -s", "set -e\n" + "".join(parts)


def _dirname(prefix: str) -> str:
    head, _sep, _tail = prefix.rpartition("/")
    return head or "."


def status_loop_command(prefixes: Sequence[str], interval_s: float = 0.5) -> str:
    """A long-lived command printing every process's state every ``interval_s`` (see parse_status)."""
    args = " ".join(shell_path(p) for p in prefixes)
    return f"sh -c {shlex.quote(STATUS_LOOP)} imgscale-status {interval_s:g} {args}"


@dataclass(frozen=True)
class RemoteStatus:
    """What the status loop saw for one process."""

    index: int
    state: str  # pending | alive | gone | exited
    exit_status: int | None = None
    wrapper_pid: int | None = None
    pgid: int | None = None
    pid: int | None = None


def parse_status(line: str) -> RemoteStatus | None:
    """Parse one status-loop line (``None`` for the round marker or noise)."""
    parts = line.split()
    if len(parts) != 5 or not parts[0].isdigit():
        return None
    index, state = int(parts[0]), parts[1]
    code = None
    if state.startswith("exit:"):
        code = _int(state[5:])
        state = "exited"
    w, g, c = (_int(x) for x in parts[2:])
    return RemoteStatus(index, state, code, w, g, c)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def watch_command(
    prefixes: Sequence[str], interval_s: float = 0.5, lines: int | None = None
) -> str:
    """One long-lived command per host: process states on stderr, every log followed on stdout.

    Each log is followed by its own ``tail -F`` (which also waits for a log not created yet) and
    every line is tagged with the log's index (``"3 text"``, see split_tagged), so attribution
    never depends on tail's file headers. ``lines=None`` starts each log at its beginning, else at
    its last ``lines`` lines. ``--pid`` ends every tail soon after the status loop, which ends on its
    first write after the channel closes: nothing lingers on the host.
    """
    start = "+1" if lines is None else str(int(lines))
    follows = [
        f'tail --pid="$s" -s 0.5 -n {start} -F -- {shell_path(p + ".log")} 2>/dev/null'
        f" | sed -u 's/^/{i} /' &"  # GNU sed: a line out per line in (mawk would buffer)
        for i, p in enumerate(prefixes)
    ]
    return "\n".join(
        [f"{status_loop_command(prefixes, interval_s)} >&2 &", "s=$!", *follows, "wait"]
    )


def split_tagged(text: str) -> tuple[int, str] | None:
    """``"3 some text"`` -> ``(3, "some text")``; None for anything else."""
    tag, sep, rest = text.partition(" ")
    if not sep or not tag.isdigit():
        return None
    return int(tag), rest


def kill_command(job: str, prefixes: Sequence[str], grace_s: int = 5) -> str:
    """A command ending the recorded process groups of ``job`` (see KILL); prints what it did."""
    args = " ".join(shell_path(p) for p in prefixes)
    return f"sh -c {shlex.quote(KILL)} imgscale-kill {shlex.quote(job)} {int(grace_s)} {args}"


# $1 the KILL script, $2 run root, $3 grace. Every job directory under the run root with pid
# records is handed to KILL with its own job id, so only processes proven to be that job's end.
SWEEP = r"""kill_script=$1; root=$2; grace=$3
for d in "$root"/*/; do
  [ -d "$d" ] || continue
  job=${d%/}; job=${job##*/}
  set --
  for f in "$d"a*/*.pid; do [ -f "$f" ] && set -- "$@" "${f%.pid}"; done
  [ $# -gt 0 ] || continue
  sh -c "$kill_script" imgscale-kill "$job" "$grace" "$@" | grep -v '^done$'
done
echo done
"""


def sweep_command(run_root: str, grace_s: int = 5) -> str:
    """End every imgscale process recorded under ``run_root`` on a host, whatever launched it."""
    return (
        f"sh -c {shlex.quote(SWEEP)} imgscale-sweep {shlex.quote(KILL)} "
        f"{shell_path(run_root.rstrip('/'))} {int(grace_s)}"
    )


@dataclass(frozen=True)
class KillReport:
    """What the kill script did on one host."""

    terminated: tuple[int, ...] = ()  # groups sent TERM
    killed: tuple[int, ...] = ()  # groups that needed KILL after the grace period
    gone: tuple[int, ...] = ()  # recorded groups with no process of ours left
    foreign: tuple[int, ...] = ()  # recorded pids now used by someone else: left alone
    stuck: tuple[int, ...] = ()  # groups still there 3 s after KILL (uninterruptible I/O)
    complete: bool = False  # the script reached its end


def parse_kill(output: str) -> KillReport:
    seen: dict[str, list[int]] = {k: [] for k in ("term", "kill", "gone", "foreign", "stuck")}
    complete = False
    for line in output.splitlines():
        word, _sep, rest = line.partition(" ")
        if word in seen and _int(rest) is not None:
            seen[word].append(int(rest))
        complete = complete or line == "done"
    return KillReport(
        terminated=tuple(seen["term"]),
        killed=tuple(seen["kill"]),
        gone=tuple(seen["gone"]),
        foreign=tuple(seen["foreign"]),
        stuck=tuple(seen["stuck"]),
        complete=complete,
    )
