"""Training. Shared by both engines here (importing neither): options, the log format and its parser,
checkpoint names, .rec discovery, OOM diagnosis, the pre-flight check; ``run`` picks the engine.
The engines, which never import each other: ``mxnet/`` (Module.fit, ps-lite) and ``torch/`` (DDP)."""
