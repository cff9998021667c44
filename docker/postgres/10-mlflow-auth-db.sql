-- Runs once, when the postgres-data volume is initialised (docker-entrypoint-initdb.d).
-- `mlflow` (tracking store) is created from POSTGRES_DB; basic-auth users live apart.
CREATE DATABASE mlflow_auth;
