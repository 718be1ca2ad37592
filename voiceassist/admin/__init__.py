"""What an admin runs: ``install``/``uninstall``, ``doctor``, ``db`` and ``calls`` (with their
reports), and ``ask`` (one turn on a recorded question, without Asterisk)."""
