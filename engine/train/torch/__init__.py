"""The PyTorch DDP training engine over the same RecordIO data (`imgscale train --engine torch`).

Entry points (nothing here imports torch at package import; ``run.main`` loads it):
  run.main(args) -> int            train with the parsed train_imagenet options (TrainOptions' torch group)
  python -m engine.train.torch.run what each process runs; torchrun env: MASTER_ADDR, MASTER_PORT,
                                   RANK, WORLD_SIZE, LOCAL_RANK (engine.train.launch.torch_env builds it)
  engine.train.launch.torch_env.torch_env(hosts, procs_per_host, master_addr, master_port) -> [env]
"""
