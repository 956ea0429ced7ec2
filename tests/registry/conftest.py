"""Registry test fixtures. The real MLflow server and its fixtures (mlflow_server, mlflow_uri, unique,
logged_run) live in tests/conftest.py, shared with the serving tests: one server per test session; model names
carry a per-test prefix, so tests never see each other's MLflow objects even though MLflow is not rolled back
between tests."""
