"""The BPF machine: instruction set, assembler/disassembler, loader, interpreter, maps, helpers.

Knows nothing of syscalls, ptrace or rich.
"""
