"""sysdispatch: a syscall tracer and seccomp-filter emulator built on an eBPF machine.

Layers, each importing only those before it: ``vm`` (the BPF machine), ``seccomp`` (seccomp
semantics), ``policy`` (policies as program tables), ``trace`` (ptrace, enforcement, recording),
``dash``/``cli`` (rich views and the command line).
"""

__version__ = "0.1.0"
