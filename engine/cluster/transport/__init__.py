"""One Transport interface (base), two implementations: local subprocesses and asyncssh."""
