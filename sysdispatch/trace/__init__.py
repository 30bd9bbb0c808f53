"""Tracing: the ptrace layer (:mod:`.ptrace`, the only module that imports python-ptrace) and,
built on it, the tracer, enforcement, events, recording and replay."""
