"""The test harness, shared by ``tests/`` and ``benchmarks/`` (neither imports the other):

* ``rig``: the real Asterisk 22 in a Debian sid chroot, test calls placed through it, the main job;
* ``emulators``: each provider API's real wire protocol on 127.0.0.1 (HTTP, gRPC, WebSocket), for
  the unmodified SDKs, able to delay, fail, hang or return garbage;
* ``fake_asterisk``: Asterisk's side of an AGI session at byte level, for what the rig cannot
  easily produce;
* ``dbservers``: MariaDB and PostgreSQL servers from Debian's packages;
* ``servers``, ``helpers``, ``speech``: a FastAGI server process, configs pointing at the
  emulators, spoken test questions.
"""
