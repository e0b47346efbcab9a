"""Small file helpers shared by every stage: atomic writes (atomic.py), reading JSON (jsonio.py), content hashes
(hashing.py), free space and a full disk (disk.py), one process per folder (locks.py). Import the modules
themselves; this package imports nothing."""
