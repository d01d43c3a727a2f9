"""Data sources: everything that writes the canonical `raw/` tables (`features.schema`).

- `raw`: the `raw` stage; runs the source that `data.source` names.
- `simulated/`: the simulated ad marketplace (`data.source = "simulated"`, the default) and its
  `generate` stage, which also writes the simulator's ground truth to `oracle/`.
- `ingest`: the `ingest` stage over the dataset adapters, one module each (`criteo`, `avazu`,
  `ali_ccp`, `mind`, `ipinyou`, `generic`), with their shared helpers (`common`, `reader`).

Only sources import from here; feature code reads what they wrote.
"""
