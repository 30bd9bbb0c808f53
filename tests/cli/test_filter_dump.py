"""`sysdispatch filter dump`: the filters of a running process (-p PID) and of a command, compared
with the bytes a small C program wrote before installing them."""

from __future__ import annotations

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
