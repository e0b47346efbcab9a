"""The feature cache, the contract between stage one (writes) and stage two (reads): the on-disk format
(format.py: written and read), non-finite values named by item (finite.py), the fingerprint and what configuration it records (fingerprint.py), checking a cache's files
(verify.py), summarising it (info.py), and refusing a stale one (staleness.py). Import the modules
themselves; this package imports nothing."""
