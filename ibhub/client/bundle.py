"""``bundle.tick`` decoded lazily: a script pays only for the instruments it holds.

The hub publishes every tick message of one Gateway read a second time, as one
:class:`~ibhub.protocol.Bundle` on ``bundle.tick`` (``messages``: ``(topic, Tick or
Ticks)`` pairs, each exactly the bytes that went out on that topic). The SDK reads
ticks from it by default (``AsyncHub(tick_bundle=None)`` over ZeroMQ): one receive,
one wake-up and one envelope decode per read instead of one per instrument per read.

Decoding the whole bundle would make a script that holds 2 of 500 instruments pay for
500, so the envelope is decoded with each inner message kept as ``msgspec.Raw`` (a
view of the bytes: a topic string and a slice per message, ~0.1 us) and only the
messages of topics the script holds are decoded (:func:`decode_message`), by the
same ``Tick | Ticks`` types the per-topic path decodes. The wire format is
unchanged: this is :class:`~ibhub.protocol.Bundle` read through a different type.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ibhub.protocol import TOPIC_BUNDLE, Bundle, Event, Tick, Ticks

BUNDLE_KEY: Final = TOPIC_BUNDLE.encode()


class LazyBundle(Event, frozen=True, tag="bundle"):
    """A :class:`~ibhub.protocol.Bundle` whose messages are still encoded (SDK-side only:
    it is not in ``AnyEvent``; an Event so it travels the SDK's ``on_event`` paths)."""

    messages: list[tuple[str, msgspec.Raw]]


# the same wire layout as Bundle (array_like: tag, seq, ts, messages); checked at import
assert Bundle.__struct_config__.tag == LazyBundle.__struct_config__.tag
assert Bundle.__struct_fields__ == LazyBundle.__struct_fields__

_bundle_decoder = msgspec.msgpack.Decoder(LazyBundle)
_message_decoder = msgspec.msgpack.Decoder(Tick | Ticks)

#: ``bytes -> LazyBundle``; raises ``msgspec.DecodeError``/``ValidationError``
decode_bundle: Final = _bundle_decoder.decode
#: one inner message (``msgspec.Raw``) -> ``Tick`` or ``Ticks``; raises as above
decode_message: Final = _message_decoder.decode
