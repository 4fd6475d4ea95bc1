"""The PyTorch DDP training engine over the same RecordIO data (`imgscale train --engine torch`).

Nothing here imports torch at package import: ``run.main(args)`` loads it when training starts.
"""
