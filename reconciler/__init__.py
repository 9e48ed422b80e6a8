"""crctl: MiCloud Connect Call Recording as code.

The data flows in one direction, one module per step:
desired YAML -> loader -> validate -> model -> planner -> plan -> render / applier
-> backend + MIR mirror.
"""

__version__ = "0.1.0"
