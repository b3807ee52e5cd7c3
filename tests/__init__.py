"""Conveyor's tests. A package, so that `tests.support` imports by its full
name and no test folder is importable on its own (as `client` or `service`)."""
