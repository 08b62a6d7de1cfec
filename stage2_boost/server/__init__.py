"""A warm stage 2 process: reruns skip the ~1.5 s of library imports.

``python -m stage2_boost train ...`` first asks a running server (``daemon``) whether it can take
the command; the server has imported pandas, scikit-learn, LightGBM, XGBoost, Optuna and matplotlib
once and forks a fresh child per run, which adopts the caller's terminal (its stdin, stdout and
stderr are passed over a Unix socket), working directory, environment, umask and arguments, and
exits with the run's exit code. A server only serves callers whose interpreter, installed packages,
project source files, load-time environment (OpenMP/BLAS threads, locale, ...), CPU affinity,
cgroup and niceness equal its own (``protocol.fingerprint``); anything else runs in the caller's
own process, as it always did.

Modules: ``protocol`` (the fingerprint, the socket folder, framed messages; standard library
only, so the client starts in milliseconds), ``client`` (hand a command over or say why not),
``daemon`` (preload, listen, fork, reap, stop when idle), ``worker`` (what the forked child does),
``cli`` (``python -m stage2_boost server start|stop|status``).
"""
