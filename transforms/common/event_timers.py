"""Rules shared by the stateful DoFns that buffer events and process them on a timer."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp


def push_timer_forward(latest_state, timer, end_us: int) -> None:
    """Sets ``timer`` to ``end_us`` unless it is already set later: it never moves backwards.

    A timer fires once, at the last time it was set to. Keeping it at the latest end seen means
    one firing processes everything up to there: in batch a single pass over the whole bag, in
    streaming one pass per watermark step (out-of-order arrivals never delay what was due).
    """
    if end_us > (latest_state.read() or 0):
        latest_state.write(end_us)
        timer.set(Timestamp(micros=end_us))


def output_timestamp(end_us: int, fire: Timestamp, streaming: bool) -> Timestamp:
    """The Beam timestamp of a row ending at ``end_us`` emitted by a timer firing at ``fire``.

    The row carries its own end (minus 1 µs, inside its window); in streaming never a time behind
    the timer that emits it, or downstream steps would see it as late data and drop it.
    """
    ts = end_us - 1
    return Timestamp(micros=max(ts, fire.micros) if streaming else ts)


def arm_once_at_end(latest_state, timer, t_us: int) -> None:
    """Batch: every element is known before the end, so one firing at the end of the global
    window processes the whole bag (setting a timer per element costs more than the math)."""
    if latest_state.read() is None:
        latest_state.write(t_us)
        timer.set(GlobalWindow().max_timestamp())


def arm_buffer_timer(latest_state, timer, t_us: int, streaming: bool) -> None:
    """After buffering an element at ``t_us``: in batch ``arm_once_at_end``; in streaming the timer
    goes to the latest element time, set again on every element so that one arriving after a
    firing (late) fires it again."""
    if not streaming:
        arm_once_at_end(latest_state, timer, t_us)
        return
    latest = max(latest_state.read() or 0, t_us)
    latest_state.write(latest)
    timer.set(Timestamp(micros=latest))


def emit_timestamp(t_us: int, fire: Timestamp, streaming: bool) -> Timestamp:
    """The Beam timestamp of a row at event time ``t_us`` emitted by a firing at ``fire``: its own
    time, in streaming never behind the firing (downstream would see late data and drop it)."""
    return Timestamp(micros=max(t_us, fire.micros) if streaming else t_us)


def take_due(
    bag,
    fire: Timestamp,
    streaming: bool,
    order: Callable[[Any], Any],
    time_us: Callable[[Any], int],
) -> list:
    """The buffered (pickled) elements a firing processes, in ``order``: all of them in batch,
    those at or before the firing in streaming. The later ones go back into the bag."""
    items = sorted((pickle.loads(b) for b in bag.read()), key=order)
    bag.clear()
    if not streaming:
        return items
    until = int(fire.micros)
    due = [x for x in items if time_us(x) <= until]
    for x in items:
        if time_us(x) > until:
            bag.add(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL))
    return due
