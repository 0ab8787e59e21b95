"""Turning typed events into stored rows and back.

One encoder and one decoder, built once over the union of every event type (msgspec's own
performance advice). Old schema versions are upcast on read, so old events stay readable.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Union

import msgspec

from dcp_events.errors import DecodeError
from dcp_events.event import Event, upcast
from dcp_events.store import NewEvent, RecordedEvent


class Codec:
    """Encodes and decodes a fixed set of event types."""

    def __init__(self, types: Iterable[type[Event]]) -> None:
        self.types: dict[str, type[Event]] = {}
        for t in types:
            tag = t.__struct_config__.tag
            if not isinstance(tag, str) or tag == t.__name__:
                raise ValueError(f"{t.__name__} needs an explicit string tag")
            if tag in self.types:
                raise ValueError(f"tag {tag!r} used twice")
            self.types[tag] = t
        self._encoder = msgspec.json.Encoder()
        union: Any = Union[tuple(self.types.values())]  # noqa: UP007 - built at run time
        self._decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(union)
        self._generic = msgspec.json.Decoder(dict[str, Any])

    def encode(self, event: Event, actor: str = "") -> NewEvent:
        """The row form of `event`: its tag, schema version and canonical JSON payload."""
        tag = event.__struct_config__.tag
        assert isinstance(tag, str)
        return NewEvent(
            type=tag,
            schema_version=type(event).schema_version,
            payload=self._encoder.encode(event),
            actor=actor,
        )

    def decode_payload(self, type_: str, schema_version: int, payload: bytes | str) -> Event:
        """The typed event for a stored row; raises DecodeError if it does not fit its schema."""
        cls = self.types.get(type_)
        if cls is None:
            raise DecodeError(f"unknown event type {type_!r}")
        try:
            if schema_version < cls.schema_version:
                obj = upcast(
                    type_, schema_version, cls.schema_version, self._generic.decode(payload)
                )
                return msgspec.convert(obj, cls)
            event = self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, KeyError) as e:
            raise DecodeError(f"{type_} v{schema_version}: {e}") from e
        if type(event) is not cls:
            raise DecodeError(f"payload tag does not match its row type {type_!r}")
        return event

    def decode(self, recorded: RecordedEvent) -> Event:
        """The typed event stored in `recorded`."""
        return self.decode_payload(recorded.type, recorded.schema_version, recorded.payload)


@functools.cache
def default_codec() -> Codec:
    """The codec over the whole domain catalogue, built once."""
    from dcp_events.catalogue import ALL_EVENTS

    return Codec(ALL_EVENTS)
