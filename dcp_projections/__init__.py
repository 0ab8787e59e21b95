"""The pure domain of DCP: state, folds, decisions, settlement and read-model rows.

Imports only the standard library, msgspec and dcp_events; no disk, socket or clock.
"""
