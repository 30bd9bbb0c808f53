"""`sysdispatch filter dump`: the filters of a running process (-p PID) and of a command (and of
the processes it forks), compared with the bytes a small C program wrote before installing them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sysdispatch.cli import main
from sysdispatch.seccomp import cfilter
from sysdispatch.vm import cbpf

from conftest import need_root

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def two_filters(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    out = tmp_path_factory.mktemp("bin") / "two_filters"
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(out),
                    str(DATA / "two_filters.c")], check=True)
    return out


def installed(d: Path) -> list[bytes]:
    """What the C program says it installed, oldest first."""
    return [(d / "0.bpf").read_bytes(), (d / "1.bpf").read_bytes()]


def dumped(d: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(d.glob("filter-*.bpf"))]


def test_dump_a_running_process(two_filters, tmp_path, capsys):
    need_root()
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    proc = subprocess.Popen([str(two_filters), str(src), "wait"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        assert main(["filter", "dump", "-p", str(proc.pid), "-o", str(out)]) == 0
        assert dumped(out) == installed(src)
        capsys.readouterr()
        assert main(["filter", "dump", "-p", str(proc.pid)]) == 0
        text = capsys.readouterr().out
        first, second = (cfilter.disassemble(cbpf.decode(raw)) for raw in installed(src))
        assert f"# filter 0 of 2 (oldest), 7 instructions, from process {proc.pid}\n{first}" in text
        assert "# filter 1 of 2 (newest), 6 instructions" in text and second in text
        # the process carries on unharmed after the dump
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("mode", [["exec", "/bin/true"], ["exit"]])
def test_dump_a_command(two_filters, tmp_path, mode, capsys):
    need_root()
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    rc = main(["filter", "dump", "-o", str(out), "--", str(two_filters), str(src), *mode])
    assert rc == 0
    assert dumped(out) == installed(src)
    assert "wrote " in capsys.readouterr().out


def test_dump_limit_stops_after_n_filters(two_filters, tmp_path):
    need_root()
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    assert main(["filter", "dump", "--limit", "1", "-o", str(out), "--", str(two_filters),
                 str(src), "exit"]) == 0
    assert dumped(out) == installed(src)[:1]


def test_a_process_without_filters(capsys):
    need_root()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert main(["filter", "dump", "-p", str(proc.pid)]) == 0
        assert capsys.readouterr().out == f"process {proc.pid} has no seccomp filters\n"
    finally:
        proc.kill()
        proc.wait()


def run_cli(*argv: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "sysdispatch", *argv],
                          capture_output=True, text=True, timeout=60)


def test_without_cap_sys_admin_one_clear_line(two_filters, tmp_path):
    need_root()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not found")
    src = tmp_path / "src"
    src.mkdir()
    r = run_cli("filter", "dump", "--", str(two_filters), str(src), "exit",
                prefix=("setpriv", "--bounding-set=-sys_admin"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "needs root (CAP_SYS_ADMIN" in r.stderr and "Permission denied" in r.stderr


def test_bad_pid_and_bad_command(capsys, tmp_path):
    assert main(["filter", "dump"]) == 2
    assert "give either -p PID or -- CMD" in capsys.readouterr().err
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert main(["filter", "dump", "-p", str(dead.pid)]) == 2
    assert f"no process {dead.pid}" in capsys.readouterr().err
    assert main(["filter", "dump", "--", str(tmp_path / "nosuch")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch: No such file or directory" in err


def leftovers() -> list[str]:
    """Processes that are our children or traced by us: none may remain after a dump."""
    me, found = str(os.getpid()), []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if me in (fields.get("PPid", "").strip(), fields.get("TracerPid", "").strip()):
            found.append(f"{name} {fields.get('Name', '').strip()} {fields.get('State', '')}")
    return found


def test_a_child_of_a_shell_installs_same_output_as_one_process(two_filters, tmp_path, capsys):
    """sh forks the program (it is not the last command): its filters are found, and with one
    process installing filters the output is exactly as for a command that installs its own."""
    need_root()
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    script = f"{two_filters} {src} exit; true"
    assert main(["filter", "dump", "--", "sh", "-c", script]) == 0
    text = capsys.readouterr().out
    first, second = (cfilter.disassemble(cbpf.decode(raw)) for raw in installed(src))
    assert text == (f"# filter 0 of 2 (oldest), 7 instructions, from 'sh -c {script}'\n{first}\n"
                    f"# filter 1 of 2 (newest), 6 instructions, from 'sh -c {script}'\n{second}")
    assert main(["filter", "dump", "-o", str(out), "--", "sh", "-c", script]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["filter-0.bpf", "filter-1.bpf"]
    assert dumped(out) == installed(src)
    assert leftovers() == []


def test_two_processes_install_filters_headers_and_files_name_the_pid(two_filters, tmp_path,
                                                                      capsys):
    need_root()
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    a.mkdir()
    b.mkdir()
    script = f"{two_filters} {a} exit & {two_filters} {b} exit; wait"
    assert main(["filter", "dump", "--", "sh", "-c", script]) == 0
    text = capsys.readouterr().out
    headers = re.findall(r"^# pid (\d+): filter (\d) of 2 \((oldest|newest)\), (\d) instructions, "
                         r"from 'sh -c .*'$", text, re.M)
    assert len(headers) == 4
    pids = list(dict.fromkeys(h[0] for h in headers))
    assert len(pids) == 2
    for pid in pids:
        assert [(i, order, n) for p, i, order, n in headers if p == pid] == [
            ("0", "oldest", "7"), ("1", "newest", "6")]
    assert main(["filter", "dump", "-o", str(out), "--", "sh", "-c", script]) == 0
    names = sorted(p.name for p in out.iterdir())
    pids = sorted({re.fullmatch(r"pid(\d+)-filter-[01]\.bpf", n).group(1) for n in names})
    assert len(pids) == 2 and len(names) == 4
    for pid in pids:
        assert [(out / f"pid{pid}-filter-{i}.bpf").read_bytes() for i in (0, 1)] == installed(a)
    assert installed(a) == installed(b)
    assert leftovers() == []


def test_a_fork_storm_without_filters_exits_cleanly(capsys):
    need_root()
    script = "for i in $(seq 40); do (true) & done; (sh -c 'true & true & wait') & wait"
    assert main(["filter", "dump", "--", "sh", "-c", script]) == 0
    assert capsys.readouterr().out == f"'sh -c {script}' has no seccomp filters\n"
    assert leftovers() == []


def test_bad_limit_one_line():
    r = run_cli("filter", "dump", "--limit", "-1", "--", "true")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == "sysdispatch: --limit -1: must be 0 (no limit) or more\n"


def test_exec_after_filters_ends_the_dump_unless_a_limit_is_given(two_filters, tmp_path, capsys):
    """Without --limit the first program's exec after its filters ends the run (sh has yet to
    fork the second); with --limit 4 the run goes on until four filters, in two processes."""
    need_root()
    a, b, out1, out2 = (tmp_path / n for n in ("a", "b", "out1", "out2"))
    a.mkdir()
    b.mkdir()
    script = f"{two_filters} {a} exec /bin/true; {two_filters} {b} exit"
    assert main(["filter", "dump", "-o", str(out1), "--", "sh", "-c", script]) == 0
    assert sorted(p.name for p in out1.iterdir()) == ["filter-0.bpf", "filter-1.bpf"]
    assert not (b / "0.bpf").exists()      # the second program never ran
    assert main(["filter", "dump", "--limit", "4", "-o", str(out2), "--", "sh", "-c", script]) == 0
    names = sorted(p.name for p in out2.iterdir())
    assert len(names) == 4 and all(re.fullmatch(r"pid\d+-filter-[01]\.bpf", n) for n in names)
    assert (b / "0.bpf").exists()
    assert leftovers() == []
