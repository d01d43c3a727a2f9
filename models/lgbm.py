"""LightGBM CTR / CVR baseline: one booster for clicks on all impressions, one for conversions on
clicked impressions; pCTCVR = pCTR * pCVR. Fed from numpy, native categorical handling.

Data-parallel (`DataParallel`, one per machine of a LightGBM network): every machine fits on
its share of the train rows, with the feature bins found on the same rows on every machine, and
LightGBM sums the histograms over the network."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.matrix import FeatureMatrix
from models.sampling import check_rate, corrected
from models.sizing import lightgbm_defaults, resolve

if TYPE_CHECKING:
    import lightgbm as lgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightGBMConfig:
    # None: derived from the train rows / positives at fit time (models.sizing)
    num_leaves: int | None = None
    learning_rate: float = 0.05
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    min_data_in_leaf: int | None = None
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    cat_smooth: float = 20.0
    max_cat_cardinality: int = 5000  # id columns with more codes are left to the counts
    cvr_num_leaves: int = 15
    cvr_min_data_in_leaf: int = 50
    # share of the train negatives the CTR booster is fitted on (predictions recalibrated,
    # models.sampling); None: derived from train.max_in_memory_rows (models.sizing)
    negative_rate: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_leaves", "cvr_num_leaves"):  # LightGBM: 1 < num_leaves <= 131072
            if getattr(self, name) is not None and not 2 <= getattr(self, name) <= 131_072:
                raise ValueError(f"{name} must lie in [2, 131072], got {getattr(self, name)}")
        counts = ("num_boost_round", "early_stopping_rounds", "min_data_in_leaf")
        for name in (*counts, "cvr_min_data_in_leaf"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("feature_fraction", "bagging_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        for name in ("lambda_l2", "cat_smooth", "max_cat_cardinality"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.negative_rate is not None:
            check_rate(self.negative_rate)


@dataclass(frozen=True)
class DataParallel:
    """One machine's part in LightGBM's data-parallel training (`tree_learner = "data"`).

    `network`: LightGBM's network parameters (`machines`, `local_listen_port`, `num_machines`).
    `rows`, `clicks`, `conversions`: the train rows over all machines (the sizing defaults and
    whether a CVR booster trains, the same answer on every machine). `ctr_bins`, `cvr_bins`:
    the rows each booster's feature bins are found on, the same on every machine (the CVR's:
    clicked rows; None without conversions), where LightGBM would otherwise bin each machine's
    own rows."""

    network: Mapping[str, Any]
    rows: int
    clicks: int
    conversions: int
    ctr_bins: FeatureMatrix
    cvr_bins: FeatureMatrix | None


def _design(x: FeatureMatrix, keep_cat: list[int]) -> np.ndarray:
    cats = x.categorical[:, keep_cat].astype(np.float32)
    return np.ascontiguousarray(np.hstack([cats, x.numeric]), dtype=np.float32)


class LightGBMCTR:
    """scikit-learn style: settings in `__init__`, `fit(...) -> self`, `predict_proba`.

    `num_threads` (like scikit-learn's `n_jobs`) is used for training and prediction, saved
    with the model and restored by `load`; None leaves LightGBM's own default.
    """

    def __init__(
        self,
        config: LightGBMConfig | None = None,
        random_state: int = 0,
        num_threads: int | None = None,
    ) -> None:
        self.config = config
        self.random_state = random_state
        self.num_threads = num_threads

    def _threads(self) -> dict[str, int]:
        return {} if self.num_threads is None else {"num_threads": self.num_threads}

    def _params(self, cvr: bool) -> dict:
        c = getattr(self, "config_", None) or self.config or LightGBMConfig()  # fitted: resolved
        return self._threads() | {
            "objective": "binary",
            "metric": ["binary_logloss", "auc"],
            "num_leaves": c.cvr_num_leaves if cvr else c.num_leaves,
            "learning_rate": c.learning_rate,
            "min_data_in_leaf": c.cvr_min_data_in_leaf if cvr else c.min_data_in_leaf,
            "feature_fraction": c.feature_fraction,
            "bagging_fraction": c.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": c.lambda_l2,
            "cat_smooth": c.cat_smooth,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def _train(
        self, name, x, y, xv, yv, cvr: bool, parallel: DataParallel | None = None
    ) -> tuple[lgb.Booster, dict]:
        """One booster; data-parallel with `parallel`, its bins found on the rows it names."""
        import lightgbm as lgb  # lazy: reading an experiment config imports this module

        c = self.config_
        params = self._params(cvr)
        columns = {
            "feature_name": self.feature_names_,
            "categorical_feature": list(range(len(self.categorical_index_))),
        }
        reference = None
        if parallel is not None:
            bins = parallel.cvr_bins if cvr else parallel.ctr_bins
            if bins is None:
                raise ValueError(f"data-parallel {name} booster: no rows to find its bins on")
            # the CTR booster opens the network; the CVR booster trains on it as it stands
            # (LightGBM's network is one per process: opening it twice fails to bind the port)
            network = dict(parallel.network)
            if cvr:
                network = {k: v for k, v in network.items() if k == "num_machines"}
            params |= network | {"tree_learner": "data", "pre_partition": True}
            design = _design(bins, self.categorical_index_)
            reference = lgb.Dataset(design, params=params, **columns).construct()
        train = lgb.Dataset(x, y, reference=reference, free_raw_data=False, **columns)
        valid = lgb.Dataset(xv, yv, reference=train)
        evals: dict = {}
        booster = lgb.train(
            params,
            train,
            num_boost_round=c.num_boost_round,
            valid_sets=[train, valid],
            valid_names=["train", "valid"],
            callbacks=[
                # on the log loss only (the first metric): what bids need, not the AUC
                lgb.early_stopping(c.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(evals),
                lgb.log_evaluation(period=100),
            ],
        )
        log.info("%s booster: best iteration %d", name, booster.best_iteration)
        return booster, evals

    def fit(
        self,
        x: FeatureMatrix,
        click: np.ndarray,
        conversion: np.ndarray | None,
        x_valid: FeatureMatrix,
        click_valid: np.ndarray,
        conversion_valid: np.ndarray | None,
        negative_rate: float = 1.0,
        parallel: DataParallel | None = None,
    ) -> LightGBMCTR:
        """Fit on rows that hold every click and the non-clicks sampled at `negative_rate`
        (`models.sampling.negative_sample`; 1.0: every row), train and valid alike, so early
        stopping compares like with like; `predict_proba` undoes the sampling. With
        `parallel`, `x` is this machine's share of the train rows, and every machine of the
        network calls `fit` with the whole valid split."""
        self.negative_rate_ = check_rate(negative_rate)
        rows, clicks = len(x), int(np.sum(click))
        if parallel is not None:  # the sizing defaults from the rows over all machines
            rows, clicks = parallel.rows, parallel.clicks
        self.config_, self.derived_ = resolve(
            self.config or LightGBMConfig(), lightgbm_defaults(rows, clicks)
        )
        c = self.config_
        self.categorical_index_ = [
            j for j, card in enumerate(x.cardinalities) if card <= c.max_cat_cardinality
        ]
        self.feature_names_ = [x.categorical_names[j] for j in self.categorical_index_] + list(
            x.numeric_names
        )
        xt, xv = _design(x, self.categorical_index_), _design(x_valid, self.categorical_index_)
        self.ctr_booster_, ctr_evals = self._train(
            "ctr", xt, click, xv, click_valid, cvr=False, parallel=parallel
        )
        self.evals_result_ = {"ctr": ctr_evals}
        self.cvr_booster_ = None
        if conversion is not None and conversion_valid is not None:
            tm, vm = click == 1, click_valid == 1
            converted = conversion[tm].sum() if parallel is None else parallel.conversions
            if converted > 0 and conversion_valid[vm].sum() > 0:
                self.cvr_booster_, cvr_evals = self._train(
                    "cvr", xt[tm], conversion[tm], xv[vm], conversion_valid[vm], True, parallel
                )
                self.evals_result_["cvr"] = cvr_evals
        if parallel is not None:
            self.ctr_booster_.free_network()
        return self

    def predict_proba(self, x: FeatureMatrix) -> np.ndarray:
        """(N, 3): pCTR, pCVR (NaN without a CVR booster), pCTCVR."""
        design = _design(x, self.categorical_index_)
        pctr = corrected(self._predict(self.ctr_booster_, design), self.negative_rate_)
        if self.cvr_booster_ is None:
            pcvr = np.full(len(pctr), np.nan)
        else:
            pcvr = self._predict(self.cvr_booster_, design)
        return np.column_stack([pctr, pcvr, pctr * pcvr])

    def _predict(self, booster: lgb.Booster, design: np.ndarray) -> np.ndarray:
        return booster.predict(design, num_iteration=booster.best_iteration, **self._threads())

    def feature_importance(self) -> dict[str, dict[str, float]]:
        """Total gain per feature, per task."""
        out = {}
        for task, booster in (("ctr", self.ctr_booster_), ("cvr", self.cvr_booster_)):
            if booster is not None:
                gains = booster.feature_importance(importance_type="gain")
                out[task] = dict(zip(booster.feature_name(), map(float, gains), strict=True))
        return out

    def save(self, directory: Path) -> None:
        """LightGBM text models + JSON settings (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.ctr_booster_.save_model(str(directory / "ctr.txt"))
        if self.cvr_booster_ is not None:
            self.cvr_booster_.save_model(str(directory / "cvr.txt"))
        meta = {
            "config": asdict(self.config_),
            "random_state": self.random_state,
            "num_threads": self.num_threads,
            "negative_rate": self.negative_rate_,
            "categorical_index": self.categorical_index_,
            "feature_names": self.feature_names_,
        }
        (directory / "lightgbm.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path, num_threads: int | None = None) -> LightGBMCTR:
        """The saved model; `num_threads` overrides the saved thread count."""
        import lightgbm as lgb

        meta = json.loads((directory / "lightgbm.json").read_text())
        threads = meta.get("num_threads") if num_threads is None else num_threads
        model = cls(LightGBMConfig(**meta["config"]), meta["random_state"], threads)
        model.config_, model.derived_ = model.config, {}
        model.negative_rate_ = float(meta.get("negative_rate", 1.0))
        model.categorical_index_ = meta["categorical_index"]
        model.feature_names_ = meta["feature_names"]
        model.ctr_booster_ = lgb.Booster(model_file=str(directory / "ctr.txt"))
        cvr = directory / "cvr.txt"
        model.cvr_booster_ = lgb.Booster(model_file=str(cvr)) if cvr.exists() else None
        return model
