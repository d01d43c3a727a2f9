"""The simulated ad marketplace, the embedded default data (`data.source = "simulated"`).

`vocabulary` (the words, pure data) -> `marketplace` (ads, users and their hidden state) ->
`impressions` (context, logging policy, true probabilities, labels, market price) and
`behaviour` (searches, views, clicks, purchases), with the draws they share in `sampling` ->
`market` (every table of one market, by seed) -> `generate` (the stage that writes `raw/` and
`oracle/`). Hidden state never becomes a column of `raw/`.
"""

from pipeline.sources import SIMULATED as SOURCE  # the `data.source` value of the simulator

__all__ = ["SOURCE"]
