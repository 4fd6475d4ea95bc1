"""The user-facing scaling feature: the sweep (for `imgscale bench scaling` and the console's
Scaling screen), kvstore bandwidth, the scaling model. Benchmarks of ours against the reference
tools live in benchmarks/ at the top of the repository."""
