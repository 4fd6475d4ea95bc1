"""Training. Shared by both engines here: options, the log format and its parser, checkpoint
names, .rec discovery, OOM diagnosis, the pre-flight check; ``launch/`` holds the Engine interface and
the registry that picks one engine per job (``run`` runs its trainer). The engines' training code
never imports each other: ``mxnet/`` (Module.fit, ps-lite) and ``torch/`` (DDP)."""
