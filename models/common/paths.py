"""Where every stage reads and writes: one name per cell (`<dataset>-<model>-<hparams>`).

dvc.yaml spells the same paths in deps and outs.
"""

from dataclasses import dataclass
from pathlib import Path

RAW = Path("datasets/raw")
NORMALIZED = Path("datasets/normalized")
SHARDS = Path("datasets/shards")
RUNS = Path("models/runs")  # models/runs/<cell>/{train,eval,bundle}/ and logs/ (untracked)
METRICS = Path("models/metrics")  # models/metrics/<cell>.json: the headline (dvc metrics)
PLOTS = Path("models/plots")  # models/plots/<kind>/<cell>.<ext>  (top-level plots in dvc.yaml)


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    hparams: str  # the name of a hyperparameter set in params.yaml `hparams`

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.hparams}"

    @property
    def shards(self) -> Path:
        return SHARDS / self.dataset

    @property
    def train_dir(self) -> Path:
        return RUNS / self.name / "train"

    @property
    def eval_dir(self) -> Path:
        return RUNS / self.name / "eval"

    @property
    def bundle_dir(self) -> Path:
        return RUNS / self.name / "bundle"

    @property
    def metrics(self) -> Path:
        """The headline: {accuracy, f1_macro, ece, size_mb}, a DVC metric in git."""
        return METRICS / f"{self.name}.json"

    @property
    def details(self) -> Path:
        """Every evaluation figure (test scores, training, calibration, size): eval/."""
        return self.eval_dir / "metrics.json"

    @property
    def logs(self) -> Path:
        """TensorBoard, dvclive and timings: not a DVC output (they carry wall-clock times,
        so no run could reproduce dvc.lock), git-ignored, rewritten by every run."""
        return RUNS / self.name / "logs"

    def plot(self, kind: str, ext: str) -> Path:
        """models/plots/<kind>/<cell>.<ext>, e.g. plot("confusion", "json")."""
        return PLOTS / kind / f"{self.name}.{ext}"
