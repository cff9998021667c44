"""What a study leaves on disk, and how it survives faults.

``studies``: names, directories, ``study.json``, the lock a running driver holds; ``trials``: Ray's
stored results read as plain JSON (nothing unpickled); ``atomic_fs``: Ray's storage with atomic
writes and a clean stop on a full disk; ``signing``: Ray's pickled state signed with the user's
key, checked before ``--resume`` unpickles it; ``repair``: every trial resumes from a checkpoint
that exists and reads back whole.
"""
