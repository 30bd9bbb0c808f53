"""ELF handlers: sections of objects built with clang -O2 -target bpf, with their maps (the
object's legacy maps section, or the policy's) and tail calls into the policy's tables."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest

from sysdispatch.errors import PolicyError
from sysdispatch.policy import parse
from sysdispatch.policy.compile import compile_policy
from sysdispatch.policy.loaded import LoadedPolicy
from sysdispatch.seccomp import actions as A
from sysdispatch.seccomp.data import SeccompData

SOURCE = textwrap.dedent('''\
    typedef unsigned int u32; typedef unsigned long long u64;
    struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; };
    struct bpf_map_def { u32 type, key_size, value_size, max_entries, map_flags; };
    struct bpf_map_def __attribute__((section("maps"), used)) counts = { 2, 4, 8, 1, 0 };
    extern int families;   /* the policy's args table */
    static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *) 1;
    static long (*bpf_tail_call)(void *ctx, void *map, u32 index) = (void *) 12;

    __attribute__((section("openat"), used))
    int third_fails(struct seccomp_data *ctx) {
        u32 key = 0;
        u64 *v = bpf_map_lookup_elem(&counts, &key);
        if (!v) return 0x7fff0000;
        u64 n = *v + 1;
        *v = n;
        if (n == 3) return 0x50005;                      /* ERRNO(EIO) */
        if (ctx->args[2] & 0100) return 0x5000d;         /* O_CREAT: ERRNO(EACCES) */
        return 0x7fff0000;
    }

    __attribute__((section("socket"), used))
    int by_family(struct seccomp_data *ctx) {
        if (ctx->args[0] < 64)
            bpf_tail_call(ctx, &families, ctx->args[0]);
        return 0x50061;                                  /* ERRNO(EAFNOSUPPORT) */
    }
    ''')

POLICY = textwrap.dedent('''\
    [policy]
    default = "allow"
    [tables.syscalls.entries]
    openat = "third"
    socket = "by_family"
    [tables.families]
    index = "args[0]"
    [tables.families.entries]
    AF_UNIX = "log"
    [handlers.third]
    elf = "h.o"
    section = "openat"
    [handlers.by_family]
    elf = "h.o"
    section = "socket"
    ''')


@pytest.fixture(scope="module")
def obj_dir(tmp_path_factory):
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (needed to build BPF objects)")
    d = tmp_path_factory.mktemp("elf")
    (d / "h.c").write_text(SOURCE)
    subprocess.run(["clang", "-O2", "-target", "bpf", "-c", "h.c", "-o", "h.o"], cwd=d,
                   check=True, capture_output=True)
    return d


def test_elf_handlers_run_with_maps_and_tail_calls(obj_dir):
    (obj_dir / "p.toml").write_text(POLICY)
    lp = LoadedPolicy.from_file(obj_dir / "p.toml")
    rets = [lp.decide(SeccompData(257)).ret for _ in range(4)]
    assert rets == [A.ALLOW, A.ALLOW, A.ERRNO | 5, A.ALLOW]
    assert lp.decide(SeccompData(257, args=(0, 0, 0o100))).ret == A.ERRNO | 13
    assert int.from_bytes(lp.compiled.maps["counts"][0], "little") == 5
    d = lp.decide(SeccompData(41, args=(1,)))
    assert d.describe() == ("syscall_entry -> tail_call syscalls[41] -> by_family -> "
                            "tail_call families[1] -> log -> return LOG")
    assert lp.decide(SeccompData(41, args=(2,))).ret == A.ERRNO | 97
    assert lp.decide(SeccompData(41, args=(1 << 32 | 1,))).ret == A.ERRNO | 97


def test_policy_map_is_shared_when_listed(obj_dir):
    text = POLICY.replace('section = "openat"', 'section = "openat"\nmaps = ["counts"]') + \
        '[maps.counts]\ntype = "array"\nkey_size = 4\nvalue_size = 8\nmax_entries = 1\n'
    (obj_dir / "q.toml").write_text(text)
    lp = LoadedPolicy.from_file(obj_dir / "q.toml")
    lp.compiled.maps["counts"][0] = (2).to_bytes(8, "little")   # the policy's map, set outside
    assert lp.decide(SeccompData(257)).ret == A.ERRNO | 5       # so this is the third call
    (obj_dir / "r.toml").write_text(text.replace("value_size = 8", "value_size = 16"))
    with pytest.raises(PolicyError, match=r"r\.toml:\d+:11: handler 'third': .*map 'counts' is "
                                          r"array 4/8/1 in the object but array 4/16/1"):
        compile_policy(parse.load(obj_dir / "r.toml"))


@pytest.mark.parametrize("change,message", [
    (('section = "openat"', 'section = "opnat"'), "no section 'opnat' (sections: openat, socket)"),
    (('[tables.families]', '[tables.fams]'), "'families' is neither a map of the object's maps "
                                             "section, nor a map the handler lists, nor an args "
                                             "table"),
])
def test_elf_errors_name_the_handler(obj_dir, change, message):
    text = POLICY.replace(*change)
    if change[1] == "[tables.fams]":
        text = text.replace("families", "fams")
    (obj_dir / "bad.toml").write_text(text)
    with pytest.raises(PolicyError) as info:
        compile_policy(parse.load(obj_dir / "bad.toml"))
    assert "handler '" in str(info.value) and message in str(info.value), str(info.value)


def test_not_a_bpf_object(obj_dir, tmp_path):
    (tmp_path / "x.c").write_text("int f(void) { return 1; }\n")
    subprocess.run(["gcc", "-c", "x.c", "-o", "x.o"], cwd=tmp_path, check=True)
    (tmp_path / "notelf.o").write_text("hello")
    for obj, message in (("x.o", r"ELF machine 62, not BPF \(247\)"), ("notelf.o", "not an ELF file")):
        (tmp_path / "p.toml").write_text(f'[policy]\ndefault = "allow"\n[tables.syscalls.entries]'
                                         f'\nread = "h"\n[handlers.h]\nelf = "{obj}"\n')
        with pytest.raises(PolicyError, match=message):
            compile_policy(parse.load(tmp_path / "p.toml"))


def test_damaged_objects_give_one_error(obj_dir, tmp_path):
    """Truncated or corrupted objects: a PolicyError naming the handler, never a Python error."""
    raw = (obj_dir / "h.o").read_bytes()
    policy = POLICY.replace('elf = "h.o"', 'elf = "d.o"')
    (tmp_path / "p.toml").write_text(policy)
    import random
    rng = random.Random(5)
    cuts = [64, 100, len(raw) // 2, len(raw) - 8]
    flips = [bytes(b ^ (0xFF if rng.random() < 0.02 else 0) for b in raw) for _ in range(15)]
    for damaged in [raw[:n] for n in cuts] + flips:
        (tmp_path / "d.o").write_bytes(damaged)
        try:
            compile_policy(parse.load(tmp_path / "p.toml"))
        except PolicyError as exc:
            assert "handler '" in str(exc) and "\n" not in str(exc)
