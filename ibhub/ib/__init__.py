"""The only package that imports the IB client library (ib_insync / ib_async): the
one door (``lib``), the session supervisor, the fast tick reader, conversions (IB
camelCase stops here), one-off queries, upstream orders and the trade cache."""
