"""Launching training: the Engine interface (MXNet, torch), its registry, and how a training job is
planned, launched, pre-flighted and relaunched over the cluster layer (engine.cluster), which knows no
training flag."""
