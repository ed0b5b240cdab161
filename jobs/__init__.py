"""WebAssembly jobs: work a worker runs and a verifier re-runs to check.

A job is a module stored as evidence, named by its CID, run on an input's bytes by
`host.run` with fuel and memory limits; the same module and input give the same output
on every machine, so a result is checked by re-running it and comparing output CIDs.
`BUILTIN` jobs are built from source here (`build.py`): wordcount, checksum, sortlines,
halve (a grayscale image at half size).
"""
