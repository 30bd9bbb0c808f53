"""Seccomp semantics: struct seccomp_data, actions and their precedence, architectures and syscall
names, stacked filters. Builds on the vm layer; knows nothing of ptrace or rich."""
