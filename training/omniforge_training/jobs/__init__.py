"""Training jobs: recipes registered by name, a job store in the registry database, the
pipeline after training, and the Celery app that runs it all on workers."""
