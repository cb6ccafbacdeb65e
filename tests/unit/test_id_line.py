"""The id line: sends are called in join order, whatever order they become ready in."""

from __future__ import annotations

from ibhub.orders.id_line import IdLine


def test_sends_go_in_join_order_and_a_ticket_that_leaves_holds_up_nothing() -> None:
    line = IdLine()
    sent: list[str] = []
    a, b, c, d = (line.join() for _ in range(4))
    line.ready(c, lambda: sent.append("c"))
    line.ready(b, lambda: sent.append("b"))
    assert sent == [] and len(line) == 4  # "a" is not ready: nothing may overtake it
    line.leave(a)  # "a" will never go
    assert sent == ["b", "c"] and len(line) == 1
    assert b.send is None and c.send is None  # let go once called: no reference cycle
    line.leave(b)  # gone already: no effect
    line.ready(d, lambda: sent.append("d"))
    assert sent == ["b", "c", "d"] and len(line) == 0
    e = line.join()
    line.ready(e, lambda: sent.append("e"))  # nothing ahead: at once
    assert sent[-1] == "e"
