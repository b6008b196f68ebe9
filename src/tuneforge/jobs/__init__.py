"""Fine-tuning jobs: uploaded files, the job state machine, the workers that train and the executors that run them.

    serve (HTTP) → jobs.files / jobs.store (records in the registry) → jobs.scheduler → executor → jobs.worker →
    train.runner (the same runner as `tuneforge train`)

A job trains in its own worker process, never in the web server, and everything about it lives in the registry, so
the server can die and come back: `jobs.scheduler` adopts workers that outlived it and restarts jobs whose worker
died, from their last checkpoint.
"""
