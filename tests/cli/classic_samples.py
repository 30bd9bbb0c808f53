"""A classic filter in seccomp-tools-style text, shared by the CLI tests that assemble, run and
disassemble it: it reads arch, nr and args[2] and has three different returns."""

FILTER_TEXT = """\
.arch x86_64
A = arch
if (A != ARCH_X86_64) goto kill
A = sys_number
if (A == ptrace) goto kill
if (A != openat) goto ok
A = args[2]
if (A & 0x3) goto deny
ok: return ALLOW
deny: return ERRNO(EACCES)
kill: return KILL_PROCESS
"""
