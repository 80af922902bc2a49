"""Experiment configs, one file per experiment; installed as `jaxgen.configs`.

Each module defines `get_config() -> ml_collections.ConfigDict` and carries its
launch command in its docstring.
"""
