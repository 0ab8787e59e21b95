"""The append-only, hash-chained event log of DCP.

Public surface: the event base (`Event`, `Posting`), the codec, the store interface and its
SQLite implementation, and the hash chain.
"""
