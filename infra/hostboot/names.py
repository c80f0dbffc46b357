"""The names that cross layers: one home for what the program, the hosts, the operator's
command line, the policy pack and the tests must agree on.

Plain constants, importable without Pulumi (``hostboot.names`` from the repository's
virtualenv; ``infra/`` and ``policy/`` read it the same way). Change one here and every layer
follows. Two copies are kept on purpose, each checked against this module by
``tests/scripts/test_names.py``: ``prefect.yaml`` (YAML, it cannot import) and
``pipeline/flows.py``'s artifact key (the flow runs on worker hosts from the pulled flow code,
where ``hostboot`` is not installed).
"""

from __future__ import annotations

from typing import Final

# Ports. MLflow and Prefect listen on the control host's private address (never public);
# PostgreSQL is RDS's (and the twin's) port.
MLFLOW_PORT: Final = 5000
PREFECT_PORT: Final = 4200
POSTGRES_PORT: Final = 5432

# The Prefect work pool the worker hosts poll and prefect.yaml's deployments target.
WORK_POOL: Final = "training"

# MLflow's basic-auth admin user (its password is generated per stack).
MLFLOW_ADMIN_USERNAME: Final = "admin"

# The kinds of environment a stack can be (its `environment` config).
ENVIRONMENTS: Final = ("dev", "prod", "ephemeral")

# The markdown artifact the training flow publishes with its metrics; `mlops run` reads it.
METRICS_ARTIFACT_KEY: Final = "training-metrics"

# Dask (docs/dask.md, "On the stack"), only when the stack's daskWorkers is above 0. The
# scheduler listens on the control host (TLS only); its dashboard on the control host's
# loopback (the SSM tunnel reaches it); xgboost's collective tracker is started on the
# scheduler's host at a fixed port so that one rule admits it. Each worker host's Dask worker
# and nanny take a port of their fixed range; xgboost's peers talk between worker hosts on
# the kernel's ephemeral ports.
DASK_SCHEDULER_PORT: Final = 8786
DASK_DASHBOARD_PORT: Final = 8787
DASK_TRACKER_PORT: Final = 8789
DASK_WORKER_PORTS: Final = (8790, 8799)
DASK_NANNY_PORTS: Final = (8800, 8809)
DASK_PEER_PORTS: Final = (32768, 60999)
