"""The simulated ad marketplace, the embedded default data (`data.source = "simulated"`).

`vocabulary` (the words, pure data) -> `marketplace` (ads, users and their hidden state) ->
`market_events` (impressions, labels, behaviour and the oracle) -> `generate` (the stage that
writes `raw/` and `oracle/`). Hidden state never becomes a column of `raw/`.
"""

SOURCE = "simulated"  # the `data.source` value that selects the simulator
