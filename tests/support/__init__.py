"""What the test folders share: the Pulumi program run under mocks, the policy pack run
over its resources without the Pulumi CLI, and a TLS-only Dask cluster.

- ``pulumi_mocks``: ``Mocks``, the AWS and random providers as the program's resources need them;
- ``pulumi_internals``: ``run_under_mocks``, the one function that calls Pulumi's private API;
- ``program``: ``run_program`` and ``ProgramRun``, what one run registered and exported;
- ``policy_pack``: ``evaluate``, the pack's policies over a run's resources;
- ``dask_tls``: ``tls_local_cluster`` and the ``client_settings`` that reach it.
"""
