"""The training-job contract, shared by whoever submits jobs (the gateway) and whoever runs
them (training workers): the job store, each recipe's parameter schema, and the queue jobs
are sent through by task name. Nothing here imports the training code or torch."""
