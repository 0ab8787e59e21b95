"""Every event type survives encode -> decode unchanged, for any valid field values."""

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcp_events.codec import Codec, default_codec
from dcp_events.errors import DecodeError
from dcp_events.event import Event, register_upcaster


def strategy_for(t: mi.Type) -> st.SearchStrategy:
    """Values of a msgspec type, honouring its Meta constraints (bounds, lengths, patterns)."""
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**53))
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**53)
        return st.integers(lo, hi)
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            return st.from_regex(t.pattern, fullmatch=True).filter(
                lambda s: (t.min_length or 0) <= len(s) <= (t.max_length or 10**6)
            )
        return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 40, 40))
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy_for(x) for x in t.types])
    if isinstance(t, mi.ListType):
        return st.lists(strategy_for(t.item_type), max_size=min(t.max_length or 4, 4))
    if isinstance(t, mi.VarTupleType):
        return st.lists(strategy_for(t.item_type), max_size=min(t.max_length or 4, 4)).map(tuple)
    if isinstance(t, mi.DictType):
        return st.dictionaries(
            strategy_for(t.key_type), strategy_for(t.value_type), max_size=min(t.max_length or 3, 3)
        )
    if isinstance(t, mi.StructType):
        fields = {f.name: strategy_for(f.type) for f in t.fields}
        return st.fixed_dictionaries(fields).map(lambda kw: t.cls(**kw))
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    raise NotImplementedError(f"no strategy for {t!r}")


CODEC = default_codec()
EVENT_TYPES = sorted(CODEC.types.values(), key=lambda c: c.__struct_config__.tag)


def test_catalogue_is_not_empty():
    """The catalogue names the whole domain, each type under a dotted tag."""
    assert len(EVENT_TYPES) >= 20
    assert all("." in c.__struct_config__.tag for c in EVENT_TYPES)


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__struct_config__.tag)
def test_round_trip_every_event_type(cls):
    """encode then decode gives back an equal event, for any valid values of its fields."""

    @given(strategy_for(mi.type_info(cls)))
    def check(event: Event) -> None:
        new = CODEC.encode(event, actor="tester")
        assert new.type == cls.__struct_config__.tag
        assert new.schema_version == cls.schema_version
        assert CODEC.decode_payload(new.type, new.schema_version, new.payload) == event

    check()


def test_unknown_type_and_bad_payload_are_decode_errors():
    """A row of an unknown type, or one that does not fit its schema, raises DecodeError."""
    with pytest.raises(DecodeError):
        CODEC.decode_payload("no.such_type", 1, b"{}")
    tag = EVENT_TYPES[0].__struct_config__.tag
    with pytest.raises(DecodeError):
        CODEC.decode_payload(tag, 1, b'{"type": "%b"}' % tag.encode() + b"garbage")


def test_old_versions_are_upcast_on_read():
    """A v1 payload of a type now at v2 is upcast by the registered upcaster."""

    class Renamed(Event, frozen=True, tag="test.renamed"):
        schema_version = 2
        amount_halala: int

    register_upcaster("test.renamed", 1, lambda o: {**o, "amount_halala": o.pop("amount")})
    codec = Codec([Renamed])
    old = b'{"type":"test.renamed","amount":5}'
    assert codec.decode_payload("test.renamed", 1, old) == Renamed(amount_halala=5)
    assert codec.decode_payload("test.renamed", 2, msgspec.json.encode(Renamed(amount_halala=7)))
