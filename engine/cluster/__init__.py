"""Running processes on hosts, knowing no training flag: hosts files, transports (transport/),
detached processes and their supervision (process/), SLURM (slurm/), telemetry (probes/). What runs
where comes from the caller's plan (engine.train.launch for training, engine.prep.pack_remote for
packing)."""
