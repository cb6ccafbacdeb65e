"""``ibhub record``: a subscriber process that keeps what the hub carries in Parquet.

format.py (the on-disk layout and schema, also read by the simulator's replay),
spool.py (the crash-safe append log of the low-rate kinds), writer.py (buffers ->
complete-or-absent Parquet parts, rolling), recorder.py (the SDK tap -> rows, gaps,
status), stats.py (``--stats``: what is on disk); the command is ibhub/cli/record.py.
See docs/recording.md. Needs the ``record`` extra (pyarrow); the hub does not.
"""
