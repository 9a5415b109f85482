"""Supervised cameras: ``cameras.toml`` (``config``), one worker process per camera
(``worker``, reusing the ``airside watch`` pipeline), restarted with back-off by the
``supervisor``, which keeps each camera's status (``status``) for the API and /metrics.
docs/cameras.md."""
