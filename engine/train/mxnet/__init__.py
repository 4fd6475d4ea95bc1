"""The MXNet training engine (`imgscale train --engine mxnet`): Module.fit over ImageRecordIter, ps-lite kvstores.

Nothing here imports mxnet at package import; ``run.main(args)`` loads it. Shared with the torch engine,
in engine/train/: options, the log format, checkpoint names, .rec file discovery.
"""
