-- Runs once, when the postgres container initialises an empty data directory: MLflow's tracking and
-- registry store gets a database of its own beside Modelplane's (POSTGRES_DB). It runs as POSTGRES_USER,
-- who therefore owns it; MLFLOW_BACKEND_STORE_URI in compose.yaml points at it.
CREATE DATABASE mlflow;
