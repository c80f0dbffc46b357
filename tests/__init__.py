"""The test suite: one package, so every module has one name for pytest and mypy alike
(``tests.infra.conftest``, not one of several ``conftest``). Shared machinery: tests/support."""
