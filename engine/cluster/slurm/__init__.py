"""SLURM as a launcher: sbatch requests and scripts, the job seen from the login node, srun steps."""
