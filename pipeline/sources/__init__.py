"""Data sources: everything that writes the canonical `raw/` tables (`features.schema`).

- `raw`: the `raw` stage; runs the source that `data.source` names.
- `simulated/`: the simulated ad marketplace (`data.source = "simulated"`, the default) and its
  `generate` stage, which also writes the simulator's ground truth to `oracle/`.
- `ingest`: the `ingest` stage over the dataset adapters, one module each (`criteo`, `avazu`,
  `ali_ccp`, `mind`, `ipinyou`, `generic`), with their shared helpers (`common`, `reader`).

Only sources import from here; feature code reads what they wrote.
"""

# the names a config may use, here so that `pipeline.config` can check them without importing
# any source (the sources import the config)
SIMULATED = "simulated"
ADAPTER_NAMES = ("criteo", "avazu", "ali_ccp", "mind", "ipinyou", "generic")  # ingest.ADAPTERS
REPLAY_ONLY = ("ipinyou_bidlog",)  # a bid log only the replay reads (pipeline/replay.py)
KNOWN_SOURCES = (SIMULATED, *ADAPTER_NAMES, *REPLAY_ONLY)
SPLIT_MODES = ("auto", "time", "files", "random")  # ingest.split_mode
